//! Creates `todos` and its 50 seed rows, exactly as the original demo:
//! `title = "test for postgres,this is {i}"`, `done = i % 2 == 0`,
//! `priority = i % 5`, for i = 0..49 (ids 1..50).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

pub const SEED_ROWS: i32 = 50;

#[derive(DeriveIden)]
enum Todos {
    Table,
    Id,
    Title,
    Done,
    Priority,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Todos::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(Todos::Id)
                            .integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Todos::Title).string_len(60).not_null())
                    .col(ColumnDef::new(Todos::Done).boolean().not_null())
                    .col(ColumnDef::new(Todos::Priority).integer().not_null())
                    .to_owned(),
            )
            .await?;

        let mut insert = Query::insert();
        insert
            .into_table(Todos::Table)
            .columns([Todos::Title, Todos::Done, Todos::Priority]);
        for i in 0..SEED_ROWS {
            insert.values_panic([
                format!("test for postgres,this is {i}").into(),
                (i % 2 == 0).into(),
                (i % 5).into(),
            ]);
        }
        manager.exec_stmt(insert).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Todos::Table).to_owned())
            .await
    }
}
