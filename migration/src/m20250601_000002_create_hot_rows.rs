//! Creates `hot_rows`, the few rows that the demo route's `work=hot` updates
//! so that concurrent requests queue on each other's row locks.
//!
//! No seed rows: the route upserts (`INSERT … ON CONFLICT (id) DO UPDATE`),
//! so any `HOT_ROWS` works without a migration, and a changed `HOT_ROWS`
//! never leaves the table short. `IF NOT EXISTS` keeps `up` safe to repeat
//! on a database where the table was made by hand.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum HotRows {
    Table,
    Id,
    Hits,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(HotRows::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(HotRows::Id)
                            .integer()
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(HotRows::Hits)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(HotRows::Table).if_exists().to_owned())
            .await
    }
}
