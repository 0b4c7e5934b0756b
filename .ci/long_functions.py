"""List the functions longer than a limit (default 60 lines, decorators and docstring included).

    python .ci/long_functions.py [LIMIT] [FOLDER ...]    # default: 60 hmxfeel

Exit status 1 when any is found, so CI can hold the line once the list is empty.
"""

import ast
import sys
from pathlib import Path


def long_functions(folder: Path, limit: int) -> list[tuple[str, int, str, int]]:
    found = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                length = node.end_lineno - first + 1
                if length > limit:
                    found.append((str(path), node.lineno, node.name, length))
    return found


def main(argv: list[str]) -> int:
    limit = int(argv[0]) if argv and argv[0].isdigit() else 60
    folders = [Path(a) for a in argv[1 if argv and argv[0].isdigit() else 0 :]] or [Path("hmxfeel")]
    found = [row for folder in folders for row in long_functions(folder, limit)]
    for path, line, name, length in found:
        print(f"{path}:{line}: {name} is {length} lines (limit {limit})")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
