package sqlite

import (
	"database/sql/driver"
	"unsafe"

	sqlite3 "modernc.org/sqlite/lib"
)

// cairnKept marks a statement prepared through database/sql (conn.Prepare) to keep its SQLite
// statement between executions: this driver prepared the SQL text again on every Exec, so a
// statement prepared once and executed per document (FerretDB's UpdateAll in Cairn's build) was
// parsed and planned per document all the same.
func cairnKept(s driver.Stmt, err error) (driver.Stmt, error) {
	if st, ok := s.(*stmt); ok && err == nil {
		st.cairnKeep = true
	}
	return s, err
}

// cairnExec executes a kept statement whose text is one SQL statement: prepared on the first
// call, then reset and its bindings cleared after each. ok is false when the text is not exactly
// one statement (or empty): the caller takes the general path, which prepares every time.
func (s *stmt) cairnExec(args []driver.NamedValue) (r driver.Result, ok bool, err error) {
	if s.cairnMulti {
		return nil, false, nil
	}
	if s.cairnPstmt == 0 {
		psql := s.psql
		pstmt, err := s.c.prepareV2(&psql)
		if err != nil {
			return nil, true, err
		}
		if pstmt == 0 || *(*byte)(unsafe.Pointer(psql)) != 0 {
			if pstmt != 0 {
				if err := s.c.finalize(pstmt); err != nil {
					return nil, true, err
				}
			}
			s.cairnMulti = true
			return nil, false, nil
		}
		s.cairnPstmt = pstmt
	}
	pstmt := s.cairnPstmt
	var allocs []uintptr
	defer func() {
		sqlite3.Xsqlite3_reset(s.c.tls, pstmt)
		sqlite3.Xsqlite3_clear_bindings(s.c.tls, pstmt)
		for _, v := range allocs {
			s.c.free(v)
		}
	}()
	n, err := s.c.bindParameterCount(pstmt)
	if err != nil {
		return nil, true, err
	}
	if n != 0 {
		if allocs, err = s.c.bind(pstmt, n, args); err != nil {
			return nil, true, err
		}
	}
	rc, err := s.c.step(pstmt)
	if err != nil {
		return nil, true, err
	}
	switch rc & 0xff {
	case sqlite3.SQLITE_DONE, sqlite3.SQLITE_ROW:
		r, err = newResult(s.c)
		return r, true, err
	default:
		return nil, true, s.c.errstr(int32(rc))
	}
}

// cairnClose finalizes a kept statement's SQLite statement. Its error is not one: finalize
// repeats the last execution's error, which that execution returned already.
func (s *stmt) cairnClose() {
	if s.cairnPstmt != 0 {
		s.c.finalize(s.cairnPstmt) //nolint:errcheck // see above
		s.cairnPstmt = 0
	}
}
