"""The Python a bare job runs with, on a node: whether it has torch (the preflight,
from the package's metadata) and what it is (prepare: the interpreter, torch and a
hash of every installed distribution, in place of an image id). The payload's setup
lines (a module load) run before each probe."""

from __future__ import annotations

from harness.backends.transport import Transport
from harness.core.inventory import PayloadSpec
from harness.errors import RunFailed, UserError

# What prepare() reports in place of an image id: the interpreter, its torch and a
# hash of every installed distribution (name==version, sorted).
_PYTHON_ENV_PROBE = """\
import hashlib, platform, sys
try:
    from importlib import metadata
    dists = sorted("%s==%s" % (d.metadata["Name"], d.version) for d in metadata.distributions())
except Exception:
    dists = []
try:
    import torch
    torch_version = torch.__version__
except Exception as exc:
    print("@torch-error %s: %s" % (type(exc).__name__, exc))
    sys.exit(3)
digest = hashlib.sha256("\\n".join(dists).encode()).hexdigest()[:12]
print("@env %s (Python %s, torch %s, %d packages sha256:%s)" % (
    sys.executable, platform.python_version(), torch_version, len(dists), digest))
"""
# The preflight's question, is torch there and which, answered from the installed
# package's metadata: importing torch takes seconds, and prepare() imports it anyway.
TORCH_PROBE = """\
import importlib.util, sys
from importlib import metadata
if importlib.util.find_spec("torch") is None:
    sys.exit("ModuleNotFoundError: No module named 'torch'")
try:
    version = metadata.version("torch")
except metadata.PackageNotFoundError:  # a source tree on the path: only the import knows
    import torch
    version = torch.__version__
print("@torch", version, sys.executable)
"""


def setup_argv(spec: PayloadSpec, argv: list[str]) -> list[str]:
    """argv run after the payload's setup lines (a module load puts python on the PATH)."""
    if not spec.setup.strip():
        return argv
    return ["sh", "-c", spec.setup.strip() + '\nexec "$@"', "bench-setup", *argv]


def python_environment(transport: Transport, spec: PayloadSpec, inventory_source: str | None) -> str:
    """What runs the job in place of an image: the interpreter, its torch and a hash of
    every installed distribution. A torch that does not import is the inventory's python."""
    probe = transport.run(setup_argv(spec, [spec.python, "-c", _PYTHON_ENV_PROBE]), timeout=120)
    error = next((line for line in probe.output.splitlines() if line.startswith("@torch-error ")), None)
    if error is not None:
        raise UserError(f"the Python on {transport.host} cannot run the job: `{spec.python} -c 'import torch'` "
                        f"failed: {error.removeprefix('@torch-error ')[-300:]}", file=inventory_source,
                        field="cluster.payload.python")
    found = [line for line in probe.output.splitlines() if line.startswith("@env ")]
    if not probe.ok or not found:
        raise RunFailed(f"{transport.host}: the Python environment probe failed: {probe.output.strip()[-300:]}")
    return found[-1].removeprefix("@env ")
