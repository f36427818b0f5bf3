"""Prints the toolkit hooks a Python module defines at its top level, one per line, without
running it (`sagebrush package --python` checks the transform_fn rule with this before
compiling). Exit status 2 and the error on stderr when the file does not parse."""

import ast
import sys

HOOKS = ("model_fn", "input_fn", "predict_fn", "output_fn", "transform_fn")


def bound_names(tree):
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    names.add(target.id)
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                names.add((alias.asname or alias.name).split(".")[0])
    return names


def main(path):
    with open(path, "rb") as f:
        source = f.read()
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as err:
        print("%s:%s: %s" % (path, err.lineno, err.msg), file=sys.stderr)
        return 2
    names = bound_names(tree)
    for hook in HOOKS:
        if hook in names:
            print(hook)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
