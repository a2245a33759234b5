//! poolscope's schema, as `sea-orm-cli migrate init` lays a migration crate
//! out. Migrations never import today's entities, so an old migration keeps
//! its meaning when the entity changes.

pub use sea_orm_migration::prelude::*;

mod m20250101_000001_create_todos;
mod m20250601_000002_create_hot_rows;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20250101_000001_create_todos::Migration),
            Box::new(m20250601_000002_create_hot_rows::Migration),
        ]
    }
}
