"""Build machinery: fallback with reasons, backend switch, concurrent builds, lock timeout."""
import os
import subprocess
import sys
import textwrap

import pytest

CHECK_RESULT = """
import warnings, torch, deblurlayers
from deblurlayers.ops import haar_dwt2d
x = torch.arange(16.).view(1, 1, 4, 4)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    ll, highs = haar_dwt2d(x)
    haar_dwt2d(x)
# block averages, computed by hand
assert ll.flatten().tolist() == [2.5, 4.5, 10.5, 12.5], ll
status = deblurlayers.native_status()
print("STATUS", status["status"])
print("WARNINGS", len([w for w in caught if "deblurlayers" in str(w.message)]))
print("REASON", status["reason"].replace(chr(10), " | "))
"""


def run_python(code, tmp_path, timeout=600, **env):
    full_env = {**os.environ, "DEBLURLAYERS_BUILD_DIR": str(tmp_path / "build"), **env}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=tmp_path)


def parse(stdout):
    return dict(line.split(" ", 1) for line in stdout.splitlines() if line.split(" ")[0].isupper())


def test_reference_backend_compiles_nothing(tmp_path):
    proc = run_python(CHECK_RESULT, tmp_path, DEBLURLAYERS_BACKEND="reference")
    assert proc.returncode == 0, proc.stderr
    out = parse(proc.stdout)
    assert out["STATUS"] == "disabled" and out["WARNINGS"] == "0"
    assert not (tmp_path / "build").exists()


def test_missing_compiler_falls_back_with_one_warning(tmp_path):
    proc = run_python(CHECK_RESULT, tmp_path, CXX="/nonexistent/c++")
    assert proc.returncode == 0, proc.stderr
    out = parse(proc.stdout)
    assert out["STATUS"] == "failed" and out["WARNINGS"] == "1"
    assert "'/nonexistent/c++' not found" in out["REASON"]


def test_compiler_error_is_reported_with_its_last_lines(tmp_path):
    fake = tmp_path / "broken-c++"
    # a real compiler for cpp_extension's version probes, an error for every compile
    fake.write_text('#!/bin/sh\ncase " $* " in *" -c "*) echo "fatal: deliberately broken compiler" >&2; exit 1;; esac\n'
                    'exec c++ "$@"\n')
    fake.chmod(0o755)
    proc = run_python(CHECK_RESULT, tmp_path, CXX=str(fake))
    assert proc.returncode == 0, proc.stderr
    out = parse(proc.stdout)
    assert out["STATUS"] == "failed"
    assert "deliberately broken compiler" in out["REASON"]


def test_native_backend_raises_with_the_reason(tmp_path):
    proc = run_python(CHECK_RESULT, tmp_path, CXX="/nonexistent/c++", DEBLURLAYERS_BACKEND="native")
    assert proc.returncode != 0
    assert "DEBLURLAYERS_BACKEND=native" in proc.stderr and "/nonexistent/c++" in proc.stderr


def test_invalid_backend_is_a_clear_error(tmp_path):
    proc = run_python(CHECK_RESULT, tmp_path, DEBLURLAYERS_BACKEND="fast")
    assert proc.returncode != 0
    assert "DEBLURLAYERS_BACKEND: expected one of ('auto', 'native', 'reference'), got 'fast'" in proc.stderr


@pytest.mark.slow
def test_two_processes_building_at_once(tmp_path):
    # A stale baton from a killed cpp_extension build would make load() wait forever.
    from deblurlayers._native.build import build_key, source_root

    build_dir = tmp_path / "build" / build_key(source_root(), with_cuda=False)
    build_dir.mkdir(parents=True)
    (build_dir / "lock").write_text("")
    env = {**os.environ, "DEBLURLAYERS_BUILD_DIR": str(tmp_path / "build"), "MAX_JOBS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", CHECK_RESULT], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env, cwd=tmp_path) for _ in range(2)]
    outputs = [proc.communicate(timeout=900) for proc in procs]
    for proc, (stdout, stderr) in zip(procs, outputs):
        assert proc.returncode == 0, stderr
        assert parse(stdout)["STATUS"] == "ok", stdout + stderr
    assert (build_dir / "deblurlayers_ops.so").is_file()
    # Only the process that compiled says so; the other found the library built when it got the lock.
    stderr = "".join(err for _, err in outputs)
    assert stderr.count("deblurlayers: building native ops") == 1 and stderr.count("native ops built in") == 1


def test_lock_held_by_another_process_times_out(tmp_path):
    fcntl = pytest.importorskip("fcntl")
    from deblurlayers._native.build import build_key, source_root

    lock_path = tmp_path / "build" / (build_key(source_root(), with_cuda=False) + ".lock")
    lock_path.parent.mkdir(parents=True)
    with open(lock_path, "w") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        proc = run_python(CHECK_RESULT, tmp_path, DEBLURLAYERS_BUILD_TIMEOUT="1")
    assert proc.returncode == 0, proc.stderr
    out = parse(proc.stdout)
    assert out["STATUS"] == "failed" and "waited 1 s for the build lock" in out["REASON"]


@pytest.mark.slow
def test_info_command_reports_ops(native_ops):
    proc = subprocess.run([sys.executable, "-m", "deblurlayers", "info", "--json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    import json

    status = json.loads(proc.stdout)
    assert status["status"] == "ok"
    assert status["ops"]["haar_dwt2d"]["cpu"] and status["ops"]["haar_idwt2d"]["cpu"]
    assert status["torch"] and status["build_dir"]
    assert status["imported_from"] == os.path.dirname(os.path.abspath(deblurlayers_init()))


def deblurlayers_init():
    import deblurlayers

    return deblurlayers.__file__


def test_use_backend_switches_and_restores(native_ops):
    import warnings

    import torch

    from deblurlayers.ops import haar_dwt2d, use_backend
    from deblurlayers.utils import env

    x = torch.randn(1, 2, 4, 4)
    with use_backend("reference"), warnings.catch_warnings():
        warnings.simplefilter("error")
        assert env.backend() == "reference"
        with torch.autograd.profiler.profile() as prof:
            haar_dwt2d(x)
    assert env.backend() == "auto"
    assert not any("deblurlayers" in e.name for e in prof.function_events)
    with torch.autograd.profiler.profile() as prof:
        haar_dwt2d(x)
    assert any(e.name == "deblurlayers::haar_dwt2d" for e in prof.function_events)
    with pytest.raises(ValueError, match="backend: expected one of"):
        with use_backend("gpu"):
            pass


def test_address_sanitizer_build_has_its_own_flags_and_cache_entry(monkeypatch):
    from deblurlayers._native import build

    root = build.source_root()
    monkeypatch.delenv("DEBLURLAYERS_SANITIZE", raising=False)
    plain_key, plain_flags = build.build_key(root, with_cuda=False), build._cxx_flags()
    monkeypatch.setenv("DEBLURLAYERS_SANITIZE", "address")
    asan_key, asan_flags = build.build_key(root, with_cuda=False), build._cxx_flags()
    assert "-fsanitize=address" in asan_flags and "-fsanitize=address" not in plain_flags
    assert "-fno-omit-frame-pointer" in asan_flags
    assert "addresssan" in asan_key and asan_key != plain_key
    monkeypatch.setenv("DEBLURLAYERS_SANITIZE", "thread")
    with pytest.raises(ValueError, match="DEBLURLAYERS_SANITIZE: expected 'address'"):
        build.build_key(root, with_cuda=False)


def test_build_announcement_is_silenced_by_its_variable(monkeypatch, capsys):
    from deblurlayers._native import build

    monkeypatch.setenv("DEBLURLAYERS_QUIET_BUILD", "1")
    build._announce("building")
    assert capsys.readouterr().err == ""
    monkeypatch.delenv("DEBLURLAYERS_QUIET_BUILD")
    build._announce("building")
    assert capsys.readouterr().err == "deblurlayers: building\n"


def test_info_fails_honestly_when_a_folder_shadows_the_package(tmp_path):
    # With an editable install, the clone seen from the folder that holds it (a `deblurlayers`
    # folder without __init__.py) is imported as a namespace package whose submodules still
    # resolve to the real ones: the package's __init__ never runs. The same state, made directly.
    import deblurlayers

    shadow = tmp_path / "deblurlayers"
    shadow.mkdir()
    code = textwrap.dedent(f"""
        import sys, types
        package = types.ModuleType("deblurlayers")
        package.__path__ = [{str(shadow)!r}, {os.path.dirname(deblurlayers.__file__)!r}]
        sys.modules["deblurlayers"] = package
        from deblurlayers.__main__ import main
        sys.exit(main(["info", "--no-build"]))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "status                failed" in proc.stdout and "ops:                  (none)" in proc.stdout
    assert f"namespace package from {shadow}" in proc.stdout
    assert f"imported_from         {shadow}{os.pathsep}" in proc.stdout
