import sqlite3

import pytest

from matou.store.metadata import MIGRATIONS, Database, _split_sql


def test_fresh_database_has_latest_schema(tmp_path) -> None:
    db = Database(str(tmp_path / "m.db"))
    assert db.version == len(MIGRATIONS)
    assert db.one("PRAGMA journal_mode")[0] == "wal"
    db.close()


def test_old_database_is_migrated_in_place(tmp_path) -> None:
    path = str(tmp_path / "m.db")
    con = sqlite3.connect(path)
    for stmt in _split_sql(MIGRATIONS[0]):
        con.execute(stmt)
    con.execute("PRAGMA user_version=1")
    con.execute("INSERT INTO kv(key, value) VALUES('daemon_id', 'X')")
    con.commit()
    con.close()
    db = Database(path)
    assert db.version == len(MIGRATIONS)
    assert db.get_kv("daemon_id") == "X"  # data survives the migration
    db.close()


def test_newer_schema_is_refused(tmp_path) -> None:
    path = str(tmp_path / "m.db")
    con = sqlite3.connect(path)
    con.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    con.commit()
    con.close()
    with pytest.raises(RuntimeError, match="newer"):
        Database(path)
