"""Building and fetching the stack's tools: checked runs of a build command, Go's toolchain, `go install` of a
module's binary into a tools folder, and a pom's jars resolved with mvn."""
import os
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path


def go_binary() -> str:
    go = shutil.which("go") or "/usr/local/go/bin/go"  # the image's Go is not always on PATH
    if not os.access(go, os.X_OK):
        raise RuntimeError("Go is needed to build Beam's Prism and boot programs and was not found (looked on PATH "
                           "and in /usr/local/go)")
    return go


def run_tool(args: list, what: str, **kwargs) -> str:
    """Run a build command; its output, or a RuntimeError naming `what` with the command's output."""
    result = subprocess.run(args, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed ({' '.join(args)}):\n{result.stdout}{result.stderr}")
    return result.stdout


def go_install(module: str, folder: Path, binary: str, what: str) -> str:
    """`go install module@version` into `folder` once; the path of `binary` there."""
    path = folder / binary
    if not os.access(path, os.X_OK):
        env = dict(os.environ, GOBIN=str(folder), GOWORK="off", GOFLAGS="-mod=mod")
        run_tool([go_binary(), "install", module], what, env=env)
    return str(path)


def mvn_copy_dependencies(pom: str, properties: dict, libs: Path, what: str) -> Path:
    """Resolve the dependencies of `pom` (a file shipped in the `stack` package) with mvn into `libs`, once: the
    folder appears whole or not at all, and a `.complete` marker makes later calls free."""
    if (libs / ".complete").exists():
        return libs
    with tempfile.TemporaryDirectory(prefix="hitstream-mvn-") as work:
        pom_path = Path(work) / "pom.xml"
        pom_path.write_bytes(resources.files("stack").joinpath(pom).read_bytes())
        staging = Path(work) / "libs"
        run_tool(["mvn", "-q", "-B", "-f", str(pom_path), "dependency:copy-dependencies",
                  *[f"-D{key}={value}" for key, value in properties.items()], f"-DoutputDirectory={staging}",
                  "-DincludeScope=runtime"], what)
        shutil.rmtree(libs, ignore_errors=True)
        shutil.move(str(staging), libs)
    (libs / ".complete").touch()
    return libs
