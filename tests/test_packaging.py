"""The wheel ships every csrc file, and an install outside the checkout builds from it."""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import deblurlayers
from deblurlayers._native import source_root

REPO = Path(__file__).resolve().parents[1]
CSRC_SUFFIXES = (".cpp", ".h", ".cu", ".cuh")


def test_version_has_one_source():
    text = (REPO / "deblurlayers" / "version.py").read_text()
    assert f'__version__ = "{deblurlayers.__version__}"' in text


def test_locator_finds_checkout_sources():
    assert source_root() == REPO / "csrc"
    assert (source_root() / "include" / "deblurlayers").is_dir()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-w", str(out), "-q"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [path] = out.glob("deblurlayers-*.whl")
    return path


def test_wheel_contains_every_csrc_file(wheel):
    expected = {f"deblurlayers/_csrc/{p.relative_to(REPO / 'csrc').as_posix()}"
                for p in (REPO / "csrc").rglob("*") if p.suffix in CSRC_SUFFIXES}
    names = set(zipfile.ZipFile(wheel).namelist())
    assert expected and expected <= names, sorted(expected - names)


def test_wheel_ships_the_license(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    [license_name] = [n for n in names if ".dist-info/" in n and n.endswith("LICENSE")]
    text = zipfile.ZipFile(wheel).read(license_name).decode()
    assert text == (REPO / "LICENSE").read_text() and text.startswith("MIT License")
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    assert "License-File: LICENSE" in zipfile.ZipFile(wheel).read(metadata).decode()


def test_sdist_ships_the_license(tmp_path):
    proc = subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    import tarfile

    [sdist] = tmp_path.glob("deblurlayers-*.tar.gz")
    assert any(name.endswith("/LICENSE") for name in tarfile.open(sdist).getnames())


@pytest.mark.slow
def test_installed_wheel_builds_and_uses_native_ops_outside_checkout(wheel, tmp_path):
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    code = (
        "import torch, deblurlayers\n"
        "from deblurlayers._native import source_root\n"
        "from deblurlayers.ops import haar_dwt2d, haar_dwt2d_reference\n"
        "x = torch.randn(2, 3, 8, 8)\n"
        "ll, hi = haar_dwt2d(x)\n"
        "haar_dwt2d(x); deblurlayers.ops.pixel_dynamic_filter(x, torch.zeros(2, 27, 8, 8))\n"
        "torch.testing.assert_close(hi, haar_dwt2d_reference(x)[1])\n"
        "s = deblurlayers.native_status()\n"
        "print(deblurlayers.__file__); print(source_root()); print(s['status'], s['ops']['haar_dwt2d']['cpu'])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site), "DEBLURLAYERS_BUILD_DIR": str(tmp_path / "build"),
           "DEBLURLAYERS_BACKEND": "native"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    module_file, sources, status = proc.stdout.splitlines()
    assert module_file.startswith(str(site))
    assert Path(sources) == site / "deblurlayers" / "_csrc"
    assert status == "ok True"
    # The first use announces the build, once per process, whatever the number of op calls.
    announced = [line for line in proc.stderr.splitlines() if line.startswith("deblurlayers: ")]
    assert len(announced) == 2, proc.stderr
    assert announced[0].startswith("deblurlayers: building native ops (first use") and str(tmp_path / "build") in announced[0]
    assert announced[1].startswith("deblurlayers: native ops built in ")
