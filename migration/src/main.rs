//! The stand-alone migration CLI that `sea-orm-cli migrate init` generates.
//! Built only with `--features cli`; `poolscope migrate` is the usual way.

use sea_orm_migration::prelude::*;

#[tokio::main]
async fn main() {
    cli::run_cli(migration::Migrator).await;
}
