package cairntest

import (
	"database/sql"
	"path/filepath"
	"testing"

	_ "modernc.org/sqlite"
)

// A statement prepared once and executed many times in a transaction (kept between executions,
// cairn_stmt_cache.go) writes what executing the text each time writes, reports rows affected
// per execution, keeps working after a failing execution, and a text of two statements still
// runs both.
func TestCairnKeptStatement(t *testing.T) {
	db, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "kept.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err = db.Exec(`CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT UNIQUE, n INTEGER)`); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		if _, err = db.Exec(`INSERT INTO t (id, v, n) VALUES (?, ?, 0)`, i, string(rune('a'+i%26))+string(rune('0'+i/26))); err != nil {
			t.Fatal(err)
		}
	}
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	stmt, err := tx.Prepare(`UPDATE t SET n = n + ?, v = ? WHERE id = ?`)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 150; i++ {
		res, err := stmt.Exec(i, "v"+string(rune('A'+i%26))+string(rune('0'+i/26)), i)
		if err != nil {
			t.Fatal(i, err)
		}
		rows, _ := res.RowsAffected()
		want := int64(1)
		if i >= 100 {
			want = 0
		}
		if rows != want {
			t.Fatalf("execution %d: %d rows, want %d", i, rows, want)
		}
	}
	if _, err = stmt.Exec(1, "vB0", 0); err == nil { // v is unique: row 1 holds vB0
		t.Fatal("a duplicate value was written")
	}
	if _, err = stmt.Exec(5, "fresh", 0); err != nil {
		t.Fatal("after a failed execution:", err)
	}
	if err = stmt.Close(); err != nil {
		t.Fatal(err)
	}
	two, err := tx.Prepare(`UPDATE t SET n = n + 1 WHERE id = 2; UPDATE t SET n = n + 1 WHERE id = 3`)
	if err != nil {
		t.Fatal(err)
	}
	if _, err = two.Exec(); err != nil {
		t.Fatal(err)
	}
	two.Close()
	if err = tx.Commit(); err != nil {
		t.Fatal(err)
	}
	var sum int
	var v string
	if err = db.QueryRow(`SELECT SUM(n) FROM t`).Scan(&sum); err != nil {
		t.Fatal(err)
	}
	if want := 99*100/2 + 5 + 2; sum != want {
		t.Fatalf("sum %d, want %d", sum, want)
	}
	if err = db.QueryRow(`SELECT v FROM t WHERE id = 0`).Scan(&v); err != nil || v != "fresh" {
		t.Fatalf("row 0 holds %q (%v), want fresh", v, err)
	}
}
