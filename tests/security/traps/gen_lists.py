#!/usr/bin/env python3
"""The trap lists, generated from the extension's own SQL, so new code is covered without
editing the harness.

Reads every string literal of src/**/*.rs (normal and raw) and every sql/*.sql file (install
and upgrade scripts), drops comments and quoted literals, and collects:

  operators  every operator symbol, with the SQL keywords that resolve to one by name
             (LIKE -> ~~, ILIKE -> ~~*, IS DISTINCT FROM / IN / NULLIF / CASE x WHEN -> =,
             NOT IN -> <>, BETWEEN -> >= and <=, SIMILAR TO -> ~, != -> <>);
  functions  every identifier written as name( that is not an SQL keyword or a type modifier
             (the extension's own legacy_* functions are left out: lb_app creating one first
             would only make CREATE EXTENSION fail).

Usage: gen_lists.py ROOT OUTDIR -> OUTDIR/operators.txt, OUTDIR/functions.txt (one per line).
"""
import pathlib
import re
import sys

root = pathlib.Path(sys.argv[1])
out = pathlib.Path(sys.argv[2])

SQL_HINT = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|WITH|CREATE|ALTER|FROM|WHERE|RETURNING|SET|WHEN)\b")


def rust_literals(text):
    """String literals of a Rust file: "..." (with escapes) and r#"..."# raw strings."""
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 2
            continue
        m = re.compile(r'(?:b|c)?r(#*)"').match(text, i)
        if m and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            end = '"' + m.group(1)
            j = text.find(end, m.end())
            j = n if j < 0 else j
            yield text[m.end():j]
            i = j + len(end)
            continue
        if c == "'":
            # a char literal ('x', '\n', '"') or a lifetime ('a): skip it so its quote is not taken for a string
            m = re.compile(r"'(?:\\.|[^\\'])'").match(text, i)
            i = m.end() if m else i + 1
            continue
        if c == '"':
            j, buf = i + 1, []
            while j < n and text[j] != '"':
                if text[j] == "\\" and j + 1 < n:
                    nxt = text[j + 1]
                    if nxt == "\n":  # line continuation: the newline and the next line's indent vanish
                        j += 2
                        while j < n and text[j] in " \t\n":
                            j += 1
                        buf.append(" ")
                        continue
                    buf.append({"n": "\n", "t": "\t", '"': '"', "\\": "\\"}.get(nxt, nxt))
                    j += 2
                    continue
                buf.append(text[j])
                j += 1
            yield "".join(buf)
            i = j + 1
            continue
        i += 1


def strip_sql(sql):
    """SQL without comments, quoted literals ('…', E'…') and quoted identifiers ("…")."""
    sql = re.sub(r"@\w+@", " ", sql)  # @extschema@ and the queries' other placeholders
    sql = re.sub(r"/\*.*?\*/", " ", sql, flags=re.S)
    sql = re.sub(r"--[^\n]*", " ", sql)
    sql = re.sub(r"[EeUu]?'(?:[^']|'')*'", " 'lit' ", sql)
    sql = re.sub(r'"(?:[^"]|"")*"', " qid ", sql)
    return sql


pieces = []
for path in sorted((root / "src").rglob("*.rs")):
    if path.name == "pg_tests.rs":  # the #[pg_test] suite, not code the extension runs
        continue
    for lit in rust_literals(path.read_text()):
        if SQL_HINT.search(lit):
            pieces.append(strip_sql(lit))
for path in sorted((root / "sql").glob("*.sql")):
    pieces.append(strip_sql(path.read_text()))
sql = "\n".join(pieces)

# Operators: maximal runs of operator characters, cut as PostgreSQL's lexer cuts them.
OPCHARS = "+-*/<>=~!@#%^&|`?"
ops = set()
for run in re.findall(r"[+\-*/<>=~!@#%^&|`?]+", sql):
    # A multi-character operator cannot end in + or - unless it contains ~ ! @ # % ^ & | ` ?
    while len(run) > 1 and run[-1] in "+-" and not any(ch in run for ch in "~!@#%^&|`?"):
        ops.add(run[-1])
        run = run[:-1]
    if run in ("=>",):  # named argument notation, not an operator
        continue
    if run == "!=":
        run = "<>"
    ops.add(run)
# pgrx / psql placeholders and artefacts of the literal stripping are not operators
ops.discard("")
KEYWORD_OPS = [
    (r"\bNOT\s+ILIKE\b", ["!~~*"]), (r"\bILIKE\b", ["~~*"]),
    (r"\bNOT\s+LIKE\b", ["!~~"]), (r"\bLIKE\b", ["~~"]),
    (r"\bSIMILAR\s+TO\b", ["~"]),
    (r"\bIS\s+(NOT\s+)?DISTINCT\s+FROM\b", ["="]),
    (r"\bNOT\s+IN\s*\(", ["<>"]), (r"\bIN\s*\(", ["="]),
    (r"\bNULLIF\s*\(", ["="]), (r"\bCASE\s+(?!WHEN)[\w.$]+\s+WHEN\b", ["="]),
    (r"\bBETWEEN\b", [">=", "<="]),
]
for pattern, symbols in KEYWORD_OPS:
    if re.search(pattern, sql, flags=re.I):
        ops.update(symbols)

KEYWORDS = set("""
all and any array as asc between by case cast check coalesce collate constraint create cube
current_date current_time current_timestamp current_user session_user default delete desc distinct
do else end except exists extract filter for foreign from full function greatest group having if
in index inner insert intersect interval into is join key lateral least left like limit local
not null nullif on or order outer over partition primary procedure raise references return
returns right row rows select set setof some table then trigger union unique update using values
view when where window with within execute perform elsif loop while query conflict operator
brin btree gin gist hash instead nothing
varchar char character numeric decimal timestamptz timestamp time bit float double precision
varying int integer smallint bigint boolean text json jsonb bytea uuid name oid regclass
""".split())
funcs = set()
for name in re.findall(r"(?<![\w.$@])([A-Za-z_][A-Za-z0-9_]*)\s*\(", sql):
    low = name.lower()
    if low in KEYWORDS or low.startswith("legacy_") or low in ("qid", "lit"):
        continue
    funcs.add(low)
# Schema-qualified calls (pg_catalog.format(…)) are also listed: qualified, they cannot be
# captured, but the same name may be called unqualified elsewhere tomorrow.
for name in re.findall(r"\bpg_catalog\.([A-Za-z_][A-Za-z0-9_]*)\s*\(", sql):
    funcs.add(name.lower())

out.mkdir(parents=True, exist_ok=True)
(out / "operators.txt").write_text("".join(o + "\n" for o in sorted(ops)))
(out / "functions.txt").write_text("".join(f + "\n" for f in sorted(funcs)))
print("operators (%d): %s" % (len(ops), " ".join(sorted(ops))))
print("functions (%d): %s" % (len(funcs), " ".join(sorted(funcs))))
