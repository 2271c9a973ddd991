#!/usr/bin/env python3
"""Checks that every SQL snippet of docs/application.md is replayed by the regress test.

For each `<!-- replay: NAME -->` marker in the guide, the fenced code block right after it holds
the snippet:
  - a TypeScript block: its SQL is the template literal of each `$queryRaw` / `$executeRaw`
    (a `${...}` in it is a bind parameter);
  - an SQL block: its SQL is the whole block (a `<name>` in it is a value to fill in).
tests/pg_regress/sql/12_application_guide.sql must have a block starting `-- replay: NAME` that
contains each of those statements, in order, with a concrete value in place of each parameter
(one SQL literal, psql variable or token without whitespace). Whitespace is compared collapsed.

Fails (exit 1) when a statement is missing or differs, when the guide and the test do not have
the same markers, when a marker is duplicated or not followed by a code block with SQL, when a
TypeScript block sending SQL ($queryRaw / $executeRaw) or an SQL block has no marker, or when
the expected output lacks a marker (it was not regenerated).

Usage: python3 tests/docs/check_application_guide.py [GUIDE [TEST_SQL [EXPECTED_OUT]]]
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "application.md"
TEST = ROOT / "tests" / "pg_regress" / "sql" / "12_application_guide.sql"
EXPECTED = ROOT / "tests" / "pg_regress" / "expected" / "12_application_guide.out"

MARKER = re.compile(r"^<!--\s*replay:\s*([A-Za-z0-9_.-]+)\s*-->\s*$")
FENCE = re.compile(r"^```\s*([A-Za-z0-9_+-]*)\s*$")
TEST_MARKER = re.compile(r"^--\s*replay:\s*([A-Za-z0-9_.-]+)\s*$")
RAW_CALL = re.compile(r"\$(?:queryRaw|executeRaw)(?:<[^`]*?>)?\s*`((?:[^`\\]|\\.)*)`", re.S)
SQL_PLACEHOLDER = re.compile(r"<[A-Za-z_][A-Za-z0-9_]*>")
HOLE = "\x00"
# One concrete value: a quoted literal, a psql variable, or a token without whitespace.
VALUE = r"""(?:'(?:[^']|'')*'|:'[A-Za-z_]\w*'|:"[A-Za-z_]\w*"|:[A-Za-z_]\w*|[^\s,()';]+)"""


def fail(errors):
    for e in errors:
        print(f"check_application_guide: {e}", file=sys.stderr)
    print(f"check_application_guide: FAILED ({len(errors)} problem(s))", file=sys.stderr)
    sys.exit(1)


def ts_holes(sql):
    """Replaces each ${...} (braces may nest) with HOLE."""
    out, i = [], 0
    while i < len(sql):
        if sql.startswith("${", i):
            depth, j = 1, i + 2
            while j < len(sql) and depth:
                depth += {"{": 1, "}": -1}.get(sql[j], 0)
                j += 1
            if depth:
                raise ValueError("unterminated ${ in template literal")
            out.append(HOLE)
            i = j
        else:
            out.append(sql[i])
            i += 1
    return "".join(out)


def normalize(sql):
    sql = re.sub(r"\s+", " ", sql).strip()
    sql = re.sub(r" ?([(),;]) ?", r"\1", sql)
    return sql.rstrip(";")


def guide_snippets(path, errors):
    """{name: (line, [sql with HOLEs])}, in order of the guide."""
    lines = path.read_text(encoding="utf-8").splitlines()
    snippets, pending, i = {}, None, 0
    while i < len(lines):
        line = lines[i]
        m = MARKER.match(line)
        if m:
            if pending:
                errors.append(f"{path.name}:{pending[1]}: marker '{pending[0]}' is not followed by a code block")
            pending = (m.group(1), i + 1)
            i += 1
            continue
        f = FENCE.match(line)
        if f and f.group(1):
            lang, start = f.group(1).lower(), i + 1
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            body = "\n".join(lines[i + 1:j])
            i = j + 1
            if lang in ("ts", "typescript", "tsx", "js", "javascript"):
                sqls = [ts_holes(s) for s in RAW_CALL.findall(body)]
                sends_sql = "$queryRaw" in body or "$executeRaw" in body
            elif lang == "sql":
                sqls = [SQL_PLACEHOLDER.sub(HOLE, body)]
                sends_sql = True
            else:
                sqls, sends_sql = [], False
            if pending:
                name, mline = pending
                pending = None
                if name in snippets:
                    errors.append(f"{path.name}:{mline}: marker '{name}' is used twice")
                elif not sqls or not any(s.strip() for s in sqls):
                    errors.append(f"{path.name}:{mline}: the code block after marker '{name}' has no SQL "
                                  "(no $queryRaw/$executeRaw template literal)")
                else:
                    snippets[name] = (start, sqls)
                if sends_sql and lang not in ("sql",) and len(sqls) != body.count("$queryRaw") + body.count("$executeRaw"):
                    errors.append(f"{path.name}:{start}: a $queryRaw/$executeRaw in block '{name}' is not "
                                  "followed by a template literal")
            elif sends_sql:
                errors.append(f"{path.name}:{start}: this {lang} block sends SQL but has no "
                              "<!-- replay: NAME --> marker right before it")
            continue
        if pending and line.strip():
            errors.append(f"{path.name}:{pending[1]}: marker '{pending[0]}' must come right before its code block")
            pending = None
        i += 1
    if pending:
        errors.append(f"{path.name}:{pending[1]}: marker '{pending[0]}' is not followed by a code block")
    return snippets


def test_blocks(path, errors):
    """{name: (line, normalized SQL of the block, comment lines left out)}."""
    blocks, current = {}, None
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        m = TEST_MARKER.match(line.strip())
        if m:
            name = m.group(1)
            if name in blocks:
                errors.append(f"{path.name}:{n}: '-- replay: {name}' appears twice")
            current = name
            blocks[name] = [n, []]
        elif current and not line.strip().startswith("--"):
            blocks[current][1].append(line)
    return {k: (v[0], normalize("\n".join(v[1]))) for k, v in blocks.items()}


def main(argv):
    guide = Path(argv[1]) if len(argv) > 1 else GUIDE
    test = Path(argv[2]) if len(argv) > 2 else TEST
    expected = Path(argv[3]) if len(argv) > 3 else EXPECTED
    errors = []
    for p in (guide, test):
        if not p.is_file():
            fail([f"{p} does not exist"])
    snippets = guide_snippets(guide, errors)
    blocks = test_blocks(test, errors)

    for name in snippets.keys() - blocks.keys():
        errors.append(f"{guide.name}:{snippets[name][0]}: snippet '{name}' has no '-- replay: {name}' block in {test.name}")
    for name in blocks.keys() - snippets.keys():
        errors.append(f"{test.name}:{blocks[name][0]}: '-- replay: {name}' has no marker in {guide.name}")

    statements = 0
    for name, (line, sqls) in snippets.items():
        if name not in blocks:
            continue
        tline, text = blocks[name]
        pos = 0
        for sql in sqls:
            statements += 1
            expected_sql = normalize(sql)
            pattern = VALUE.join(re.escape(part) for part in expected_sql.split(HOLE))
            m = re.compile(pattern).search(text, pos)
            if not m:
                shown = re.sub(r"\s+", " ", sql).strip().replace(HOLE, "${…}")
                where = "in order " if re.compile(pattern).search(text) else ""
                errors.append(f"{guide.name}:{line}: snippet '{name}': this SQL is not {where}in the "
                              f"'-- replay: {name}' block ({test.name}:{tline}):\n    {shown}")
            else:
                pos = m.end()

    if expected.is_file():
        out = expected.read_text(encoding="utf-8")
        for name in snippets:
            if f"-- replay: {name}\n" not in out:
                errors.append(f"{expected.name}: lacks '-- replay: {name}': regenerate the expected output")
    else:
        errors.append(f"{expected} does not exist")

    if errors:
        fail(errors)
    print(f"check_application_guide: OK: {len(snippets)} snippets, {statements} SQL statements of "
          f"{guide.relative_to(ROOT) if guide.is_relative_to(ROOT) else guide} replayed in "
          f"{test.relative_to(ROOT) if test.is_relative_to(ROOT) else test}")


if __name__ == "__main__":
    main(sys.argv)
