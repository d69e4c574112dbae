"""Which modules a policy's list of module names grants: shared by ``Policy`` (in the
caller) and the enforcer (in the sandbox), and free of imports, since every sandbox under a
policy loads it."""

from __future__ import annotations

# Command-line programs inside packages a policy grants: they parse the interpreter's
# sys.argv, read the process's stdin and the files argv names (as library code, which may
# read module files on sys.path), print and exit. json.tool also reaches pathlib and
# argparse: on 3.12 `json.tool.Path._flavour` is the real os.path, and through it os and
# sys. A grant of the package does not cover them; naming one grants it. (Also any
# `pkg.__main__`, which runs its program when imported.)
SEPARATE = ("json.tool",)


def grants(modules: tuple[str, ...], module: str) -> bool:
    """Whether the granted names ``modules`` cover importing ``module``."""
    for granted in modules:
        if module != granted and not module.startswith(granted + "."):
            continue
        below = module[len(granted):]  # "" or ".sub.module"
        if ".__main__." in below + ".":
            continue
        if any((module == s or module.startswith(s + "."))
               and not (granted == s or granted.startswith(s + ".")) for s in SEPARATE):
            continue
        return True
    return False
