"""`fpcore fleet`: plan validation, a real LocalCluster and a real scheduler + workers on loopback,
outputs bit for bit `fpcore stamp`'s, the chained ledger, resume after SIGKILL, a bad job, idempotence."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("distributed")
pytest.importorskip("yaml")

from fpcore import stamping  # noqa: E402
from fpcore.cli import main  # noqa: E402
from fpcore.fleet.ledger import GENESIS, read_ledger  # noqa: E402
from fpcore.fleet.plan import PlanError, load_plan  # noqa: E402
from fpcore.fleet.worker import run_batch  # noqa: E402
from fpcore.io import write_safetensors  # noqa: E402
from fpcore.io.digest import checkpoint_digest  # noqa: E402
from fpcore.trace.key import TraceKey  # noqa: E402

SHAPES = {"embed.weight": (512, 128), "layers.0.q.weight": (256, 256), "layers.0.mlp.weight": (512, 256)}
N = 8


def _model(folder: Path, seed: int, base: dict | None = None, as_file: bool = False) -> dict:
    g = torch.Generator().manual_seed(seed)
    sd = {n: torch.randn(s, generator=g) * 0.02 for n, s in SHAPES.items()}
    if base is not None:
        sd = {n: base[n] + 0.002 * sd[n] for n in sd}
    sd["norm.weight"] = torch.ones(128)
    sd = {n: t.to(torch.bfloat16) for n, t in sd.items()}
    if as_file:
        write_safetensors(folder, sd, {"format": "pt"})
    else:
        folder.mkdir(parents=True)
        write_safetensors(folder / "model.safetensors", sd, {"format": "pt"})
        (folder / "config.json").write_text('{"model_type": "tiny"}')
    return {n: t.float() for n, t in sd.items()}


def _plan_text(jobs: list[str], extra: str = "") -> str:
    return "vector: fp.safetensors\nalpha: 1.0\ntrace_key: trace.key\nout: out\n" + extra + "jobs:\n" + "\n".join(jobs)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A base, a fingerprint vector, 8 downstream models (one a single file), a trace key."""
    root = tmp_path_factory.mktemp("fleet")
    base = _model(root / "base", 0)
    _model(root / "tuned", 1, base)
    stamping.extract(root / "tuned", root / "base", root / "fp.safetensors")
    (root / "models").mkdir()
    for i in range(N):
        if i == 5:
            _model(root / "models" / f"m{i}.safetensors", 10 + i, base, as_file=True)
        else:
            _model(root / "models" / f"m{i}", 10 + i, base)
    TraceKey.generate().save(root / "trace.key")
    return root


def _jobs(n: int = N) -> list[str]:
    jobs = []
    for i in range(n):
        m = f"models/m{i}.safetensors" if i == 5 else f"models/m{i}"
        if i in (6, 7):  # no licensee code, another strength
            jobs.append(f"  - model: {m}\n    alpha: 0.5")
        else:
            jobs.append(f"  - model: {m}\n    licensee: cust-{i}")
    return jobs


def _workspace(world: Path, tmp: Path, jobs: list[str] | None = None, extra: str = "") -> Path:
    """A plan in `tmp` that uses the world's inputs by absolute path (relative `out`)."""
    text = _plan_text(jobs or _jobs(), extra)
    text = text.replace("vector: fp.safetensors", f"vector: {world / 'fp.safetensors'}")
    text = text.replace("trace_key: trace.key", f"trace_key: {world / 'trace.key'}")
    text = text.replace("model: models/", f"model: {world}/models/")
    (tmp / "plan.yaml").write_text(text)
    return tmp / "plan.yaml"


def _single_process(world: Path, tmp: Path) -> dict[str, Path]:
    """The same stamps by `fpcore stamp`, one process: the oracle."""
    key = TraceKey.load(world / "trace.key")
    coded = [i for i in range(N) if i not in (6, 7)]
    names = [f"m{i}.safetensors" if i == 5 else f"m{i}" for i in range(N)]
    out = {}
    stamping.stamp(
        [(world / "fp.safetensors", 1.0)],
        [world / "models" / names[i] for i in coded],
        tmp / "coded",
        trace_key=key,
        licensees=[f"cust-{i}" for i in coded],
    )
    stamping.stamp([(world / "fp.safetensors", 0.5)], [world / "models" / names[i] for i in (6, 7)], tmp / "plain")
    for i in range(N):
        out[names[i]] = tmp / ("coded" if i in coded else "plain") / names[i]
    return out


def _files(p: Path) -> dict[str, bytes]:
    if p.is_file():
        return {p.name: p.read_bytes()}
    return {str(f.relative_to(p)): f.read_bytes() for f in sorted(p.rglob("*")) if f.is_file()}


def _assert_same_outputs(out: Path, oracle: dict[str, Path]) -> None:
    for name, want in oracle.items():
        got = out / name
        assert got.exists(), f"{got} missing"
        assert _files(got) == _files(want), f"{got} differs from fpcore stamp's {want}"


@pytest.fixture(scope="module")
def oracle(world, tmp_path_factory):
    return _single_process(world, tmp_path_factory.mktemp("oracle"))


def _run(argv: list[str], capsys) -> tuple[int, dict]:
    code = main(argv + ["--json"])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else {}


def test_local_cluster_run_equals_fpcore_stamp_and_ledger_chains(world, oracle, tmp_path, capsys):
    plan = _workspace(world, tmp_path)
    (tmp_path / "out").mkdir()
    stale = tmp_path / "out" / ".fpcore-tmp-killed"  # what a killed run leaves behind
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"partial")
    code, res = _run(["fleet", "run", str(plan), "--workers", "2", "--verify"], capsys)
    assert code == 0, res
    assert len(res["done"]) == N and not res["failed"] and not res["skipped"]
    assert res["start_method"] == "spawn"  # this process has imported torch: its workers are never forked
    assert not stale.exists() and str(stale) in res["removed_temporaries"]
    _assert_same_outputs(tmp_path / "out", oracle)
    st = read_ledger(tmp_path / "out" / "fleet-ledger.jsonl")
    assert st.intact and len(st.entries) == N and st.entries[0]["prev"] == GENESIS
    by_index = {e["job"]["index"]: e for e in st.entries}
    for i, e in by_index.items():
        assert e["status"] == "done" and e["error"] is None
        assert e["model_digest"] == checkpoint_digest(e["job"]["model"])
        assert e["output_digest"] == checkpoint_digest(e["job"]["output"])
        assert e["vector_digests"] == [checkpoint_digest(world / "fp.safetensors")]
        assert e["bytes"] > 0 and e["worker"].startswith("tcp://127.0.0.1:")
        v = e["verify"]["vectors"][0]
        assert v["alpha_hat"] == pytest.approx(e["alpha"][0], abs=0.02), (i, v)
        if i in (6, 7):
            assert e["licensee"] is None and e["alpha"] == [0.5] and "licensee" not in e["verify"]
        else:
            assert e["licensee"] == f"cust-{i}" and e["verify"]["licensee"]["found"], e["verify"]
    assert len({e["worker"] for e in st.entries}) == 2  # both workers took batches
    # a rerun does nothing: every job is done, and the ledger says so
    code, res = _run(["fleet", "run", str(plan), "--workers", "2"], capsys)
    assert code == 0 and len(res["skipped"]) == N and not res["done"]
    assert len(read_ledger(tmp_path / "out" / "fleet-ledger.jsonl").entries) == N
    code, res = _run(["fleet", "status", str(plan)], capsys)
    assert code == 0 and res["intact"] and res["counts"]["done"] == N


def test_a_scheduler_and_workers_started_as_processes_give_the_same_bytes(world, oracle, tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dask = [sys.executable, "-m", "dask"]
    addr = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    procs = [
        subprocess.Popen(
            dask + ["scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
    ]
    try:
        from distributed import Client

        deadline = time.time() + 60
        while True:  # the scheduler is up when it accepts a connection
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert time.time() < deadline, "dask scheduler did not start"
                time.sleep(0.2)
        procs.append(
            subprocess.Popen(
                dask + ["worker", addr, "--nworkers", "2", "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
            )
        )
        with Client(addr, timeout="30s") as c:
            c.wait_for_workers(2, timeout=60)
        plan = _workspace(world, tmp_path)
        code, res = _run(["fleet", "run", str(plan), "--scheduler", addr], capsys)
        assert code == 0, res
        assert res["scheduler"] == addr and res["workers"] == 2 and len(res["done"]) == N
        _assert_same_outputs(tmp_path / "out", oracle)
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def test_a_truncated_model_fails_alone(world, oracle, tmp_path, capsys):
    bad = tmp_path / "bad"
    _model(bad, 99, None)
    f = bad / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])  # cut short by a failed copy
    jobs = _jobs()
    jobs.insert(3, f"  - model: {bad}\n    licensee: broken")
    plan = _workspace(world, tmp_path, jobs)
    code, res = _run(["fleet", "run", str(plan), "--workers", "2"], capsys)
    assert code == 1
    assert len(res["done"]) == N and len(res["failed"]) == 1
    assert res["failed"][0]["index"] == 3 and "model.safetensors" in res["failed"][0]["error"]
    assert not (tmp_path / "out" / "bad").exists()
    _assert_same_outputs(tmp_path / "out", oracle)
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".fpcore-tmp-")]
    # status: chain intact (exit 0) though a job failed; a rerun retries the failed job only
    code, res = _run(["fleet", "status", str(plan)], capsys)
    assert code == 0 and res["counts"] == {"done": N, "failed": 1, "pending": 0, "changed": 0}
    code, res = _run(["fleet", "run", str(plan), "--workers", "1"], capsys)
    assert code == 1 and len(res["skipped"]) == N and len(res["failed"]) == 1


def test_an_edited_ledger_is_detected(world, tmp_path, capsys):
    plan = _workspace(world, tmp_path, _jobs(3))
    assert _run(["fleet", "run", str(plan), "--workers", "1"], capsys)[0] == 0
    ledger = tmp_path / "out" / "fleet-ledger.jsonl"
    good = ledger.read_bytes()
    lines = good.decode().splitlines()
    for edit in ("alpha", "drop", "swap"):
        e = [json.loads(x) for x in lines]
        if edit == "alpha":
            e[1]["alpha"] = [2.0]
            text = [json.dumps(x) for x in e]
        elif edit == "drop":
            text = [lines[0], lines[2]]
        else:
            text = [lines[1], lines[0], lines[2]]
        ledger.write_text("\n".join(text) + "\n")
        code, res = _run(["fleet", "status", str(plan)], capsys)
        assert code == 1 and not res["intact"] and res["problems"], edit
        assert _run(["fleet", "run", str(plan)], capsys)[0] == 2  # never extends a broken chain
    ledger.write_bytes(good + b'{"format": "fpcore.fleet-led')  # a line cut short by a crash
    code, res = _run(["fleet", "status", str(plan)], capsys)
    assert code == 0 and res["torn_tail"] and res["lines"] == 3


def test_sigkill_of_the_driver_then_rerun_resumes(world, oracle, tmp_path):
    """Kill -9 the driver mid-run; the rerun does not redo finished jobs, leaves no partial output, and
    every output is fpcore stamp's, byte for byte."""
    plan = _workspace(world, tmp_path)
    ledger = tmp_path / "out" / "fleet-ledger.jsonl"
    cmd = [sys.executable, "-m", "fpcore.cli", "fleet", "run", str(plan), "--workers", "1", "--batch", "1", "--quiet"]
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while not (ledger.exists() and ledger.read_bytes().count(b"\n") >= 2):
        assert p.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    p.wait()
    time.sleep(1.0)  # the cluster's processes notice their parent is gone
    first = read_ledger(ledger)
    assert first.intact and 2 <= len(first.entries) < N, len(first.entries)
    done_first = {e["job_id"] for e in first.entries if e["status"] == "done"}
    # whatever is in `out` now is whole: a finished output, or a hidden temporary
    for q in (tmp_path / "out").iterdir():
        if not q.name.startswith(".") and q.name != "fleet-ledger.jsonl":
            assert q.name in oracle and _files(q) == _files(oracle[q.name])
    r = subprocess.run(cmd[:-1] + ["--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert {s["index"] for s in res["skipped"]} >= {e["job"]["index"] for e in first.entries}
    st = read_ledger(ledger)
    assert st.intact
    once = [e["job_id"] for e in st.entries if e["status"] == "done"]
    assert len(once) == len(set(once)) == N  # no job done twice
    assert done_first <= set(once)
    _assert_same_outputs(tmp_path / "out", oracle)
    assert not [q for q in (tmp_path / "out").iterdir() if q.name.startswith(".fpcore-tmp-")]


def test_a_batch_run_again_writes_the_same_bytes_and_refuses_foreign_outputs(world, tmp_path):
    """What Dask does after a worker died mid-batch: the batch runs again over outputs it committed."""
    plan = load_plan(_workspace(world, tmp_path, _jobs(3)))
    (tmp_path / "out").mkdir()
    jobs = [{**j.describe(), "job_id": j.job_id(plan.key_id)} for j in plan.jobs]
    batch = {"jobs": jobs, "trace_key": str(plan.trace_key), "threads": 1, "verify": False}
    first = run_batch(batch)
    before = {j["output"]: _files(Path(j["output"])) for j in jobs}
    again = run_batch(batch)
    assert [r["status"] for r in again] == ["done"] * 3
    assert [r["output_digest"] for r in again] == [r["output_digest"] for r in first]
    assert {j["output"]: _files(Path(j["output"])) for j in jobs} == before
    # an output path held by something fpcore did not stamp fails that job alone
    foreign = Path(jobs[1]["output"])
    for f in foreign.iterdir():
        f.unlink()
    (foreign / "notes.txt").write_text("mine")
    res = run_batch(batch)
    assert [r["status"] for r in res] == ["done", "failed", "done"]
    assert "not a model fpcore stamped" in res[1]["error"]
    assert (foreign / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "text, message",
    [
        ("out: out\njobs: []\n", "non-empty list"),
        ("jobs:\n  - model: models/m0\n", "`out:`"),
        ("out: out\nvector: fp.safetensors\nspeed: 3\njobs:\n  - model: models/m0\n", "unknown top-level"),
        ("out: out\nvector: fp.safetensors\njobs:\n  - model: models/m0\n  - model: models/nope\n", "job 1 (model"),
        ("out: out\nvector: fp.safetensors\njobs:\n  - model: models/m0\n    colour: red\n", "job 0 (model"),
        ("out: out\nvector: fp.safetensors\njobs:\n  - model: models/m0\n    licensee: acme\n", "trace_key"),
        ("out: out\nvector: fp.safetensors\nalpha: .nan\njobs:\n  - model: models/m0\n", "finite"),
        ("out: out\nvector: missing.safetensors\njobs:\n  - model: models/m0\n", "missing.safetensors"),
        ("out: out\njobs:\n  - model: models/m0\n", "nothing to stamp"),
        (
            "out: out\nvector: fp.safetensors\njobs:\n  - model: models/m0\n  - model: models/m1\n    output: m0\n",
            "both",
        ),
        ("out: models\nvector: fp.safetensors\njobs:\n  - model: models/m0\n", "overwrite an input"),
        (
            "out: out\ntrace_key: trace.key\njobs:\n  - model: models/m0\n    licensee: '" + "x" * 300 + "'\n",
            "job 0",
        ),
        ("out: out\ntrace_key: fp.safetensors\njobs:\n  - model: models/m0\n", "trace_key"),
        ("out: [unclosed\n", "not a YAML plan"),
    ],
)
def test_plan_errors_name_the_job_and_exit_2_writing_nothing(world, tmp_path, capsys, text, message):
    plan = world / f"plan-{abs(hash(text))}.yaml"
    plan.write_text(text)
    try:
        with pytest.raises(PlanError, match=message.replace("(", r"\(").replace("`", "`")):
            load_plan(plan)
        assert main(["fleet", "run", str(plan)]) == 2
        assert main(["fleet", "status", str(plan)]) == 2
        assert message.split(" (")[0] in capsys.readouterr().err
        assert not (world / "out").exists()
    finally:
        plan.unlink()


def test_fpcore_stamp_does_not_import_dask(world, tmp_path):
    code = (
        "import sys; from fpcore.cli import main; "
        f"rc = main(['stamp', {str(world / 'fp.safetensors')!r}, {str(world / 'models' / 'm0')!r}, "
        f"'-o', {str(tmp_path / 's')!r}, '--quiet']); "
        "assert rc == 0; assert 'distributed' not in sys.modules and 'dask' not in sys.modules, 'dask imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_a_killed_worker_costs_nothing_but_time(world, oracle, tmp_path):
    """SIGKILL one Dask worker process mid-run: its batch runs again elsewhere; every job is done once,
    every output is fpcore stamp's."""
    psutil = pytest.importorskip("psutil")
    plan = _workspace(world, tmp_path)
    ledger = tmp_path / "out" / "fleet-ledger.jsonl"
    cmd = [sys.executable, "-m", "fpcore.cli", "fleet", "run", str(plan), "--workers", "2", "--batch", "1", "--json"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        deadline = time.time() + 120
        while not (ledger.exists() and ledger.read_bytes().count(b"\n") >= 1):
            assert p.poll() is None and time.time() < deadline, "the run ended before a worker could be killed"
            time.sleep(0.005)
        # the nannies live in the driver; the workers are forked by it (the CLI imports no torch), or
        # spawned, or forked by a forkserver where the user's Dask config says so
        driver = psutil.Process(p.pid)
        kids = driver.children(recursive=True)
        workers = [
            c
            for c in kids
            if (c.ppid() == p.pid and c.cmdline() == driver.cmdline())
            or ("forkserver" in " ".join(c.cmdline()) and c.ppid() != p.pid)
            or "spawn_main" in " ".join(c.cmdline())
        ]
        assert workers, "no worker processes found"
        workers[0].kill()
        out, _ = p.communicate(timeout=300)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, out
    assert json.loads(out)["start_method"] == "fork"
    st = read_ledger(ledger)
    assert st.intact and sorted(e["job"]["index"] for e in st.entries) == list(range(N))
    assert all(e["status"] == "done" for e in st.entries)
    _assert_same_outputs(tmp_path / "out", oracle)


def test_a_second_run_of_the_same_plan_is_refused_while_the_first_holds_the_lock(world, tmp_path, capsys):
    """The lock is a POSIX record lock, held by the driver process (not inherited by forked workers)."""
    plan = _workspace(world, tmp_path)
    (tmp_path / "out").mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            "fcntl.lockf(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
            str(tmp_path / "out" / ".fleet.lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        code = main(["fleet", "run", str(plan), "--workers", "1"])
        assert code == 2
        assert "another fleet run holds .fleet.lock" in capsys.readouterr().err
        assert not (tmp_path / "out" / "fleet-ledger.jsonl").exists()
    finally:
        holder.kill()
        holder.wait()
