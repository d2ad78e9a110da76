"""Make the loan audit trail append-only in the database itself, not only in `LoanStatusChange.save()`.

PostgreSQL refuses UPDATE and DELETE on the table (TRUNCATE, used by test database flushes and by an operator
who really means it, is a separate privilege). SQLite, the newcomer's database, refuses UPDATE.
"""

from django.db import migrations

POSTGRES_FORWARD = """
CREATE FUNCTION loans_status_change_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'loans_loanstatuschange is append-only: % refused', TG_OP;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER loans_status_change_append_only
    BEFORE UPDATE OR DELETE ON loans_loanstatuschange
    FOR EACH ROW EXECUTE FUNCTION loans_status_change_append_only();
"""
POSTGRES_BACKWARD = """
DROP TRIGGER IF EXISTS loans_status_change_append_only ON loans_loanstatuschange;
DROP FUNCTION IF EXISTS loans_status_change_append_only();
"""
SQLITE_FORWARD = """
CREATE TRIGGER loans_status_change_append_only BEFORE UPDATE ON loans_loanstatuschange
BEGIN SELECT RAISE(ABORT, 'loans_loanstatuschange is append-only: UPDATE refused'); END;
"""
SQLITE_BACKWARD = "DROP TRIGGER IF EXISTS loans_status_change_append_only;"


def forward(apps, schema_editor):
    sql = {"postgresql": POSTGRES_FORWARD, "sqlite": SQLITE_FORWARD}.get(schema_editor.connection.vendor)
    if sql:
        schema_editor.execute(sql, params=None)


def backward(apps, schema_editor):
    sql = {"postgresql": POSTGRES_BACKWARD, "sqlite": SQLITE_BACKWARD}.get(schema_editor.connection.vendor)
    if sql:
        schema_editor.execute(sql, params=None)


class Migration(migrations.Migration):
    dependencies = [("loans", "0001_initial")]
    operations = [migrations.RunPython(forward, backward)]
