#!/usr/bin/env python3
"""Refreshes the PL/pgSQL function bodies an upgrade script repeats from sql/*.sql.

Upgrade scripts cannot include files, so sql/legacy_backup--A--B.sql repeats the CREATE FUNCTION
statements of the functions it replaces. After editing such a function in sql/*.sql, run
    python3 scripts/sync_upgrade_script.py sql/legacy_backup--A--B.sql
and every `CREATE [OR REPLACE] FUNCTION name(...) ... END $$;` block in it is replaced by the
current one from sql/*.sql (keeping the script's OR REPLACE). tests/integration/t_upgrade.sh then
proves the updated catalog equals a fresh install.
"""
import pathlib
import re
import sys

# A PL/pgSQL function: from its CREATE to the END $$; before any other statement starts.
BLOCK = re.compile(r"^CREATE (?:OR REPLACE )?FUNCTION ([\w@.\"]+)\((?:(?!^CREATE ).)*?END \$\$;", re.S | re.M)


def sources(root):
    found = {}
    for path in sorted(root.glob("sql/*.sql")):
        if "--" in path.name:
            continue
        for m in BLOCK.finditer(path.read_text()):
            found[m.group(1)] = m.group(0)
    return found


def main(script):
    root = pathlib.Path(__file__).resolve().parent.parent
    current = sources(root)
    path = pathlib.Path(script)
    text = path.read_text()
    replaced = []

    def swap(m):
        name = m.group(1)
        if name not in current:
            return m.group(0)
        body = current[name]
        if m.group(0).startswith("CREATE OR REPLACE"):
            body = body.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)
        if body != m.group(0):
            replaced.append(name)
        return body

    path.write_text(BLOCK.sub(swap, text))
    print(f"{path}: {len(replaced)} function(s) refreshed" + (f": {', '.join(replaced)}" if replaced else ""))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
