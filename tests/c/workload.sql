-- A sqlite3 workload for tests/c_abi.rs (in-memory database: the page
-- cache and every row come from malloc). Deterministic: no random().
PRAGMA cache_size = -65536;
CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT, b INTEGER, c TEXT);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300000)
INSERT INTO t SELECT i, printf('%08x-%d', (i * 2654435761) % 4294967296, i), (i * 7919) % 1000,
                     substr(hex(zeroblob(i % 150)) || printf('%d', i * i), 1, 200) FROM n;
CREATE INDEX ta ON t(a);
CREATE INDEX tb ON t(b, a);
SELECT b, count(*), sum(length(c)), min(a), max(a) FROM t GROUP BY b ORDER BY b LIMIT 5;
SELECT count(*) FROM t WHERE a LIKE 'ab%';
SELECT sum(id) FROM (SELECT id FROM t ORDER BY a DESC LIMIT 1000);
SELECT count(DISTINCT substr(a, 1, 4)) FROM t;
SELECT group_concat(id, ',') FROM (SELECT id FROM t WHERE b = 17 ORDER BY c, id LIMIT 20);
UPDATE t SET c = c || c WHERE b < 300;
DELETE FROM t WHERE b % 3 = 0;
SELECT count(*), sum(length(c)), total(b) FROM t;
VACUUM;
SELECT count(*) FROM t JOIN t AS u ON u.id = t.id + 1 WHERE t.b = u.b - 7919 % 1000;
