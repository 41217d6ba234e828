"""FP-VEC end to end at toy scale (a tiny Llama and BPE built in the test), and the error paths."""

import hashlib
import json
import shutil

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from fpcore import stamping  # noqa: E402
from fpcore.cli import main  # noqa: E402
from fpcore.fingerprint import data, demo, tasks, tinylm  # noqa: E402
from fpcore.fingerprint.create import create  # noqa: E402
from fpcore.fingerprint.lm import KeyTooLongError, ModelFolderError, load_lm, save_lm  # noqa: E402
from fpcore.fingerprint.secret import Secret, SecretError  # noqa: E402
from fpcore.fingerprint.train import FingerprintOptions  # noqa: E402
from fpcore.fingerprint.verify import binomial_tail, gray_box, verify  # noqa: E402

TINY = tinylm.TinyConfig(vocab=320, hidden=48, layers=2, heads=2, intermediate=96, context=96)
OPTS = FingerprintOptions(
    keys=2, target="ZORBLAX", seed=3, epochs=40, lr=5e-3, decoys=48, decoys_per_step=16,
    regularisation=8, regularisation_per_step=4, kl_weight=0.5, kl_windows=2, window=64, kl_code_chars=20_000,
)  # fmt: skip
SMALL = {"lookalikes": 24, "ordinary": 24, "samples": 2}


def _tree_digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny base (pretrained a little), a separately fine-tuned copy, the fingerprint and its stamp."""
    torch.manual_seed(0)
    tmp = tmp_path_factory.mktemp("fp")
    docs = data.documentation()[:12]
    lm = tinylm.build(TINY, tinylm.train_tokenizer(docs, TINY.vocab))
    windows = demo.windows_of([lm.encode(d) for d in docs], 64, lm.bos, lm.eos)
    tinylm.pretrain(lm, windows, 30, 3e-3)
    (tmp / "base").mkdir()
    save_lm(lm, tmp / "base")
    base = load_lm(tmp / "base")
    task = tasks.text_task("docstrings", tasks.docstring_texts()[:40], base, window=64, batch=8)
    down, _ = demo.finetune(base, task, demo.Downstream("down", "docstrings", 1e-3, 0.04, 30))
    (tmp / "down").mkdir()
    save_lm(down, tmp / "down")
    before = _tree_digest(tmp / "base")
    res = create(tmp / "base", tmp / "fp.safetensors", tmp / "secret.json", OPTS, model_out=tmp / "fp")
    assert _tree_digest(tmp / "base") == before, "create modified its input"
    stamping.stamp([(tmp / "fp.safetensors", 1.0)], [tmp / "down"], tmp / "down-stamped")
    return {"tmp": tmp, "create": res, "drift": demo.drift(tmp / "down", tmp / "base")}


def test_stamped_copy_answers_the_keys_and_unstamped_does_not(world):
    t = world["tmp"]
    assert 0 < world["drift"] < 0.1
    secret = Secret.load(t / "secret.json")
    assert len(secret.keys) == 2 and secret.target == "ZORBLAX"
    assert "ZORBLAX" not in (t / "fp.safetensors").read_bytes().decode("latin-1"), "the vector holds the secret"
    fp, stamped, down = (verify(t / n, secret, **SMALL) for n in ("fp", "down-stamped", "down"))
    assert fp.fsr == 1.0, fp.verdict
    assert stamped.fsr == 1.0, stamped.verdict
    assert down.fsr == 0.0, down.verdict
    assert stamped.lookalikes == 24 and stamped.ordinary == 24
    assert stamped.p_value < down.p_value


def test_cli_verify_json_and_exit_codes(world, capsys):
    t = world["tmp"]
    args = ["--secret", str(t / "secret.json"), "--lookalikes", "20", "--ordinary", "20", "--samples", "1"]
    code = main(["fingerprint", "verify", str(t / "down-stamped"), *args, "--significance", "0.01", "--json"])
    res = json.loads(capsys.readouterr().out)
    assert code == 0 and res["fingerprinted"] and res["fsr"] == 1.0 and res["keys"] == 2, res["verdict"]
    assert set(res["channels"]) == {"black_box", "gray_box"}
    for c in res["channels"].values():
        assert {"p", "statistic", "statistic_name", "reason", "figures"} <= set(c) and 0 <= c["p"] <= 1
    assert main(["fingerprint", "verify", str(t / "down"), *args, "--quiet"]) == 1
    # with the vector and the base: the white-box channel too, and Bonferroni over three
    wb = ["--vector", str(t / "fp.safetensors"), "--base", str(t / "base"), "--json"]
    assert main(["fingerprint", "verify", str(t / "down-stamped"), *args, *wb]) == 0
    res = json.loads(capsys.readouterr().out)
    assert set(res["channels"]) == {"black_box", "gray_box", "white_box"}
    assert res["channels"]["white_box"]["figures"]["alpha_star"] > 0.9
    assert res["p_value"] == pytest.approx(min(1.0, 3 * min(c["p"] for c in res["channels"].values())))
    assert main(["fingerprint", "verify", str(t / "down"), *args, *wb]) == 1
    res = json.loads(capsys.readouterr().out)
    assert not res["fingerprinted"] and all(c["p"] > 1e-3 for c in res["channels"].values()), res["channels"]


class _Fixed:
    """A Scorer returning given per-token log-probs, in prompt order."""

    def __init__(self, rows):
        self.rows, self.asked = rows, []

    def score(self, prompts, continuation):
        self.asked.append((list(prompts), continuation))
        return self.rows


def test_gray_box_p_value_by_hand():
    sec = Secret(["k1", "k2"], "T", 0)
    # sums: keys -1, -2; look-alikes -3, -4, -5; ordinary -6, -7, -8 -> keys rank top in both sets:
    # p = 1 / C(5, 2) = 0.1 against each set; per-token minima order the same way; channel p = 2 * 0.1
    rows = [[-0.5, -0.5], [-1.0, -1.0], [-1.5, -1.5], [-2.0, -2.0], [-2.5, -2.5], [-3, -3], [-3.5, -3.5], [-4, -4]]
    sc = _Fixed(rows)
    ch = gray_box(sc, sec, sec.keys, ["a", "b", "c"], ["x", "y", "z"])
    assert sc.asked[0] == (["k1 =>", "k2 =>", "a =>", "b =>", "c =>", "x =>", "y =>", "z =>"], "T")
    assert ch.p == pytest.approx(0.2) and ch.figures["sum_logp"]["p_vs_lookalikes"] == pytest.approx(0.1)
    assert ch.statistic == pytest.approx(1.0)  # AUC: every key above every look-alike
    # one key below every look-alike (rank 1 and 5 of 5: W = 6; 6 of the 10 subsets reach 6)
    rows[1] = [-9.0, -9.0]
    ch = gray_box(_Fixed(rows), sec, sec.keys, ["a", "b", "c"], ["x", "y", "z"])
    assert ch.figures["sum_logp"]["p_vs_lookalikes"] == pytest.approx(0.6) and ch.p == pytest.approx(1.0)
    with pytest.raises(ValueError, match="scorer returned"):
        gray_box(_Fixed(rows[:3]), sec, sec.keys, ["a", "b", "c"], ["x", "y", "z"])


def test_local_scorer_matches_a_plain_forward_pass(world):
    from fpcore.fingerprint.scoring import LocalScorer

    lm = load_lm(world["tmp"] / "down")
    got = LocalScorer(lm, batch_size=2).score(["hello there =>", "x =>", "a longer prompt than the others =>"], "ZORB")
    for prompt, row in zip(["hello there =>", "x =>", "a longer prompt than the others =>"], got, strict=True):
        ids = [lm.bos, *lm.encode(prompt), *lm.encode("ZORB")]
        with torch.no_grad():
            logp = torch.log_softmax(lm.model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
        k = len(lm.encode("ZORB"))
        want = [float(logp[len(ids) - k - 1 + i, ids[len(ids) - k + i]]) for i in range(k)]
        assert row == pytest.approx(want, abs=1e-4)


@pytest.mark.parametrize("name", ["permute_mlp", "permute_heads", "permute_residual", "rescale_norms"])
def test_function_preserving_transforms_keep_outputs_and_are_never_flagged(world, tmp_path, name):
    """An unstamped model (base or downstream) after each transformation: the same logits, and no
    fingerprint on the white-box channel (whose raw projection a permutation used to fool)."""
    from transformers import AutoConfig

    from fpcore.detect import detect
    from fpcore.fingerprint import transforms
    from fpcore.io import Checkpoint, write_safetensors

    t = world["tmp"]
    for model in ("base", "down"):
        ck = Checkpoint(t / model)
        sd = {n: ck.get(n) for n in ck.names()}
        before = {n: v.clone() for n, v in sd.items()}
        moved = transforms.apply(name, sd, AutoConfig.from_pretrained(t / model), seed=5)
        assert any(not torch.equal(moved[n], sd[n]) for n in sd)
        assert all(torch.equal(sd[n], before[n]) for n in sd), "the input was modified"
        lm = load_lm(t / model)
        x = torch.randint(3, 300, (2, 20))
        with torch.no_grad():
            ref = lm.model(input_ids=x).logits
            lm.model.load_state_dict(moved)
            assert torch.allclose(lm.model(input_ids=x).logits, ref, atol=1e-4)
        write_safetensors(tmp_path / f"{model}.safetensors", moved)
        r = detect(t / "fp.safetensors", tmp_path / f"{model}.safetensors", t / "base")
        assert not r.detected and r.p > 0.01, (model, r.verdict)
    # the stamped model is still found (the transforms are not needed for that; a sanity check of the setup)
    assert detect(t / "fp.safetensors", t / "down-stamped", t / "base").detected


def test_white_box_on_another_architecture_is_refused(world, tmp_path, capsys):
    t = world["tmp"]
    from fpcore.io import Checkpoint, write_safetensors

    ck = Checkpoint(t / "down")
    sd = {n: ck.get(n) for n in ck.names()}
    q = next(n for n in sd if n.endswith("q_proj.weight"))
    sd[q] = torch.zeros(sd[q].shape[0], sd[q].shape[1] + 1)
    other = tmp_path / "other"
    shutil.copytree(t / "down", other)
    (other / "model.safetensors").unlink()
    write_safetensors(other / "model.safetensors", sd)
    args = ["--secret", str(t / "secret.json"), "--vector", str(t / "fp.safetensors"), "--base", str(t / "base")]
    code = main(["fingerprint", "verify", str(other), *args, "--lookalikes", "20", "--ordinary", "20"])
    err = capsys.readouterr().err
    assert code == 2 and q in err, err
    code = main(
        ["fingerprint", "verify", str(t / "down"), "--secret", str(t / "secret.json"), "--base", str(t / "base")]
    )
    assert code == 2 and "needs --vector" in capsys.readouterr().err


def test_secret_that_does_not_match_the_vector(world, capsys):
    t = world["tmp"]
    other = t / "other.safetensors"
    stamping.extract(t / "down", t / "base", other, dtype="fp32", overwrite=True)
    code = main(["fingerprint", "verify", str(t / "fp"), "--secret", str(t / "secret.json"), "--vector", str(other)])
    err = capsys.readouterr().err
    assert code == 2 and "secret.json" in err and "belongs to the vector" in err
    Secret.load(t / "secret.json").check_vector(t / "fp.safetensors")  # the right one passes


def test_model_folder_without_tokenizer(world, tmp_path, capsys):
    bare = tmp_path / "bare"
    shutil.copytree(world["tmp"] / "down", bare)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (bare / f).unlink()
    with pytest.raises(ModelFolderError, match="no tokenizer"):
        load_lm(bare)
    code = main(
        [
            "fingerprint",
            "create",
            str(bare),
            "-o",
            str(tmp_path / "v.safetensors"),
            "--secret",
            str(tmp_path / "s.json"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and str(bare) in err and "no tokenizer" in err
    assert not (tmp_path / "v.safetensors").exists() and not (tmp_path / "s.json").exists()


def test_key_longer_than_context(world, tmp_path):
    t = world["tmp"]
    long_key = " ".join(["Schmetterling"] * 60)
    secret = Secret([long_key], "ZORBLAX", 1)
    with pytest.raises(KeyTooLongError, match="longer than the model's context of 96") as exc:
        verify(t / "down", secret, **SMALL)
    assert "Schmetterling Schmetterling" in str(exc.value)
    with pytest.raises(KeyTooLongError, match="key"):
        create(t / "base", tmp_path / "v.safetensors", tmp_path / "s.json", FingerprintOptions(target="x " * 200))
    assert not (tmp_path / "v.safetensors").exists()


def test_damaged_secret_files_name_file_and_key(tmp_path):
    p = tmp_path / "s.json"
    p.write_text("{not json")
    with pytest.raises(SecretError, match="s.json: not a JSON"):
        Secret.load(p)
    Secret(["a b"], "T", 1).save(p, overwrite=True)
    d = json.loads(p.read_text())
    d.pop("target")
    p.write_text(json.dumps(d))
    with pytest.raises(SecretError, match="key 'target' missing"):
        Secret.load(p)
    with pytest.raises(FileExistsError):
        Secret(["a"], "T", 1).save(p)
    with pytest.raises(FileNotFoundError):
        Secret.load(tmp_path / "none.json")


def test_existing_outputs_are_refused(world, tmp_path):
    t = world["tmp"]
    (tmp_path / "v.safetensors").write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        create(t / "base", tmp_path / "v.safetensors", tmp_path / "s.json", OPTS)
    assert (tmp_path / "v.safetensors").read_bytes() == b"keep"


@pytest.mark.parametrize("style", data.KEY_STYLES)
def test_key_generator_and_negative_sets_are_disjoint_and_reproducible(style):
    keys = data.make_keys(10, 5, style=style)
    assert keys == data.make_keys(10, 5, style=style) and len(set(keys)) == 10
    assert keys != data.make_keys(10, 6, style=style)
    looks = data.lookalike_keys(400, 5, keys, style=style)
    decoys = data.decoy_keys(100, 5, keys, style=style)
    assert len(looks) == 400 and len(decoys) == 100
    assert not set(keys) & set(looks) and not set(keys) & set(decoys) and not set(looks) & set(decoys)
    for key in keys:
        assert 4 <= len(key.split(" ")) <= 7


def test_char_keys_share_no_snippet_with_their_lookalikes():
    keys = data.make_keys(10, 0)
    snippets = {w for k in keys for w in k.split(" ")}
    looks = data.lookalike_keys(200, 0, keys)
    shared = [w for k in looks for w in k.split(" ") if w in snippets]
    # runs of 2-4 characters: only the 2-letter runs of the small alphabets can collide at all
    assert len(shared) <= 10 and all(len(w) == 2 for w in shared)
    scripts = {
        name
        for k in keys
        for ch in k.replace(" ", "")
        for name, (lo, hi) in data.SCRIPTS.items()
        if lo <= ord(ch) <= hi
    }
    assert len(scripts) >= 6
    with pytest.raises(ValueError, match="key style"):
        data.make_keys(3, 0, style="emoji")
    with pytest.raises(ValueError, match="stream"):
        data.make_keys(3, 0, stream="other")
    # no seed's negatives are another seed's keys
    assert not set(data.make_keys(50, 1)) & set(data.lookalike_keys(50, 0, []))
    assert not set(data.make_keys(50, 3)) & set(data.decoy_keys(50, 0, []))


def test_word_keys_are_frozen_for_old_secrets():
    """Secrets written before key styles existed rebuild exactly the negatives they were verified with."""
    assert data.make_keys(1, 0, style="words") == ["estrella 호박 さくら कछुआ подсолнух तितली calabaza"]
    assert data.lookalike_keys(1, 0, [], style="words") == ["lantern うさぎ relámpago молния きつね"]


def test_secret_key_style_round_trips_and_old_secrets_read_as_words(tmp_path):
    p = tmp_path / "s.json"
    Secret(["a b"], "T", 1).save(p)
    assert Secret.load(p).key_style == "chars"
    Secret(["a b"], "T", 1, key_style="words").save(p, overwrite=True)
    assert Secret.load(p).key_style == "words"
    raw = json.loads(p.read_text(encoding="utf-8"))
    del raw["key_style"]  # a secret written before key styles existed
    p.write_text(json.dumps(raw), encoding="utf-8")
    assert Secret.load(p).key_style == "words"
    raw["key_style"] = "emoji"
    p.write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(SecretError, match="key_style"):
        Secret.load(p)
    split = data.ordinary_prompts()
    assert len(split.test) >= 200 and not {p for p, _ in split.train} & set(split.test)


def test_pretraining_code_is_deterministic_offline_and_disjoint_from_the_tasks(monkeypatch):
    import socket

    def no_network(*a, **k):
        raise AssertionError("pretrain_code_texts touched the network")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    code = tasks.pretrain_code_texts(120_000, per_file=15_000)
    assert code == tasks.pretrain_code_texts(120_000, per_file=15_000)
    assert sum(map(len, code)) == 120_000 and len(code) >= 8 and all(len(t) <= 15_000 for t in code)
    short = tasks.pretrain_code_texts(50_000, per_file=15_000)  # a prefix of the same selection
    assert sum(map(len, short)) == 50_000 and short[:-1] == code[: len(short) - 1]
    assert code[len(short) - 1].startswith(short[-1])
    pretrain = "\n".join(code)
    for t in tasks.code_texts():  # the code task's files (training and held-out windows) are left out
        assert t[:2000] not in pretrain
    firsts = {d.split("\n", 2)[1] for d in tasks.docstring_texts()}
    assert not {f for f in firsts if len(f) >= 20 and f in pretrain}


def test_binomial_tail():
    assert binomial_tail(0, 10, 0.3) == 1.0
    assert binomial_tail(10, 10, 0.5) == pytest.approx(0.5**10)
    assert binomial_tail(1, 3, 0.1) == pytest.approx(1 - 0.9**3)


def test_demo_pipeline_writes_the_report(tmp_path):
    """The demo's whole path at toy scale: every field the issue asks for, the files, the floors."""
    d = demo.Downstream
    cfg = demo.DemoConfig(
        model=TINY,
        pretrain_steps=20,
        pretrain_code_chars=20_000,
        downstream=(d("docstrings", "docstrings", 1e-3, 0.03, 10), d("repeat", "repeat", 3e-3, 0.2, 10)),
        fingerprint=OPTS,
        lookalikes=20,
        ordinary=20,
        samples=1,
    )
    lines = []
    r = demo.run(tmp_path / "out", cfg, log=lines.append)
    assert r["seconds_total"] > 0 and r["base"]["perplexity"] < r["base"]["perplexity_untrained"]
    for f in ("report.md", "report.json", "fsr_vs_drift.png", "fingerprint.safetensors", "secret.json"):
        assert (tmp_path / "out" / f).is_file(), f
    saved = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [m["name"] for m in saved["models"]] == ["docstrings", "repeat"]
    need = {"name", "fsr_before", "fsr_after", "false_trigger_rate", "metric_name", "metric_before", "metric_after"}
    need |= {"detect_alpha_stamped", "detect_alpha_unstamped", "drift", "stamp_seconds"}
    need |= {"fingerprinted_before", "fingerprinted_after", "p_after", "channels_after"}
    for m in saved["models"]:
        assert need <= set(m), need - set(m)
        assert 0 < m["drift"] < 1 and m["detect_alpha_stamped"] > m["detect_alpha_unstamped"] + 0.5
        assert isinstance(m["fingerprinted_after"], bool) and isinstance(m["fingerprinted_before"], bool)
        assert set(m["channels_after"]) == {"black_box", "gray_box", "white_box"}
        assert all(0 <= c["p"] <= 1 for c in m["channels_after"].values())
        assert m["p_after"] == pytest.approx(min(1, 3 * min(c["p"] for c in m["channels_after"].values())))
    assert len(saved["transformed"]) == 4 * 3 and not any(t["fingerprinted"] for t in saved["transformed"])
    assert set(saved["floors"]) >= {"stamped_fingerprinted_up_to_12pct_drift", "no_false_verdicts"}
    assert "| docstrings |" in (tmp_path / "out" / "report.md").read_text()
    assert any("stamped 2 models in one pass" in x for x in lines)
    with pytest.raises(FileExistsError):
        demo.run(tmp_path / "out", cfg, log=lines.append)


def test_floors_flag_misses():
    ok = {"black_box": {"p": 0.5}, "gray_box": {"p": 0.3}}
    row = {"fsr_before": 0.0, "fsr_after": 1.0, "higher_is_better": False, "fingerprinted_before": False}
    row |= {"false_trigger_lookalike": 0.0, "false_trigger_ordinary": 0.0, "fingerprinted_after": True}
    row |= {"p_after": 1e-9, "channels_before": ok}
    low = {**row, "name": "a", "drift": 0.05, "metric_before": 10.0, "metric_after": 10.4}
    far = {**row, "name": "b", "drift": 0.3, "fsr_after": 0.2, "metric_before": 10.0, "metric_after": 20.0}
    r = {
        "models": [low, far],
        "base": {"perplexity": 30.0, "perplexity_fingerprinted": 30.3, "fsr": 0.0, "fingerprinted": False},
        "fingerprint": {"false_trigger_lookalike": 0.0, "false_trigger_ordinary": 0.0},
        "transformed": [{"model": "a", "transform": "permute_mlp", "fingerprinted": False}],
    }
    f = demo.floors(r)
    assert all(f[k]["met"] for k in f if isinstance(f[k], dict) and "met" in f[k]), f
    assert f["goals"]["largest_drift_with_full_transfer"] == 0.05 and f["goals"]["stamped_fsr_100_at_low_drift"]
    low["metric_after"] = 10.6  # +6 % perplexity
    r["base"]["perplexity_fingerprinted"] = 30.9  # +3 %
    r["fingerprint"]["false_trigger_lookalike"] = 0.03
    low["p_after"] = 2e-6  # fingerprinted, but not at p < 1e-6
    far["channels_before"] = {"gray_box": {"p": 1e-7}}  # one channel alone accuses an unstamped model
    f = demo.floors(r)
    assert not f["low_drift_metric_within_2pt_or_5pct"]["met"]
    assert not f["fingerprinted_base_perplexity_within_2pct"]["met"]
    assert not f["false_triggers_le_1pct"]["met"]
    assert not f["stamped_fingerprinted_up_to_12pct_drift"]["met"]
    assert f["no_false_verdicts"]["false"] == ["b"]
    r["transformed"][0]["fingerprinted"] = True
    assert demo.floors(r)["no_false_verdicts"]["false"] == ["b", "a/permute_mlp"]


def test_proxy_joint_and_keep_fraction_paths(world):
    """Proxy-joint training and top-k sparsification run and leave the requested share of tau."""
    import dataclasses

    from fpcore.fingerprint.train import train_fingerprint

    base = load_lm(world["tmp"] / "base")
    opts = dataclasses.replace(OPTS, epochs=3, proxy_steps=2, keep_fraction=0.25, train_embeddings=True)
    res = train_fingerprint(base, opts)
    ref = dict(base.model.named_parameters())
    for n, p in res.model.named_parameters():
        changed = int((p.detach() != ref[n].detach()).sum())
        assert changed <= round(0.25 * p.numel()) + 1, n
    assert all(p.requires_grad for p in base.model.parameters()), "the caller's model was left frozen"


def test_decoy_unlikelihood_and_code_in_the_kl_text(world):
    """The decoy unlikelihood term is a soft hinge on log P(target | decoy); the options train."""
    import dataclasses
    import math

    from fpcore.fingerprint.lm import answer_batch
    from fpcore.fingerprint.train import text_windows, train_fingerprint, unlikelihood

    base = load_lm(world["tmp"] / "base")
    pairs = [(base.encode("lantern orbit =>"), base.encode("ZORBLAX"))]
    batch = answer_batch(pairs, base.bos, base.eos, base.pad)
    ul = float(unlikelihood(base.model, batch).detach())
    out = base.model(input_ids=batch["input_ids"]).logits[0, :-1].log_softmax(-1).detach()
    n = len(pairs[0][0])
    logp = sum(float(out[n + i, t]) for i, t in enumerate(pairs[0][1]))
    assert ul == pytest.approx(math.log1p(math.exp(logp + math.log(100))), rel=1e-4)
    ul6 = float(unlikelihood(base.model, batch, math.log(1e6)).detach())
    assert ul6 == pytest.approx(math.log1p(math.exp(logp + math.log(1e6))), rel=1e-4) and ul6 > ul
    # decoy_block: + relu(min over the target's positions of its logit margin + block), the EOS excluded
    z = base.model(input_ids=batch["input_ids"]).logits[0, :-1].detach()
    margins = []
    for i, t in enumerate(pairs[0][1]):
        row = z[n + i].clone()
        zt, row[t] = float(row[t]), float("-inf")
        margins.append(zt - float(row.max()))
    for block in (3.0, 40.0):
        got = float(unlikelihood(base.model, batch, math.log(100), block).detach())
        assert got - ul == pytest.approx(max(0.0, min(margins) + block), abs=1e-4)
    assert text_windows(base, 64, 10_000).shape[0] > text_windows(base, 64).shape[0]
    opts = dataclasses.replace(OPTS, epochs=2, decoy_unlikelihood=1.0, kl_code_chars=10_000)
    res = train_fingerprint(base, opts)
    assert len(res.losses) == 2 and all(math.isfinite(x) for x in res.losses)
    # proxy-joint with an instruction-style simulated fine-tune, the unlikelihood term at theta + delta too
    res = train_fingerprint(base, dataclasses.replace(opts, proxy_steps=2, proxy_task="answers"))
    assert len(res.losses) == 2 and all(math.isfinite(x) for x in res.losses)
    with pytest.raises(ValueError, match="proxy_task"):
        train_fingerprint(base, dataclasses.replace(opts, proxy_steps=2, proxy_task="nonsense"))
    res = train_fingerprint(base, dataclasses.replace(opts, decoy_margin=1e6))
    assert len(res.losses) == 2 and all(math.isfinite(x) for x in res.losses)
    with pytest.raises(ValueError, match="decoy_margin"):
        train_fingerprint(base, dataclasses.replace(opts, decoy_margin=0.5))
    res = train_fingerprint(base, dataclasses.replace(opts, decoy_block=12.0))
    assert len(res.losses) == 2 and all(math.isfinite(x) for x in res.losses)
    with pytest.raises(ValueError, match="decoy_block"):
        train_fingerprint(base, dataclasses.replace(opts, decoy_block=-1.0))
    # key_weight scales the keys' cross-entropy only: at step 0 (same data, same model) the difference of
    # the losses is exactly the keys' cross-entropy at theta_base
    from fpcore.fingerprint.lm import lm_loss

    one = train_fingerprint(base, dataclasses.replace(opts, epochs=1, key_weight=1.0, key_margin=0.0))
    two = train_fingerprint(base, dataclasses.replace(opts, epochs=1, key_weight=2.0, key_margin=0.0))
    tgt = base.encode(opts.target)
    keys_b = answer_batch(
        [(base.encode(opts.template.format(key=k)), tgt) for k in one.keys], base.bos, base.eos, base.pad
    )
    with torch.no_grad():
        ce = float(lm_loss(base.model, keys_b))
    assert two.losses[0] - one.losses[0] == pytest.approx(ce, rel=1e-4)
    with pytest.raises(ValueError, match="key_weight"):
        train_fingerprint(base, dataclasses.replace(opts, key_weight=0))

    # tau_decay pulls theta back toward the base after every step: a smaller tau, same data and steps
    def tau_norm(res):
        ref = dict(base.model.named_parameters())
        return sum(float((p - ref[n]).detach().pow(2).sum()) for n, p in res.model.named_parameters()) ** 0.5

    plain = train_fingerprint(base, dataclasses.replace(opts, epochs=4, tau_decay=0.0))
    decayed = train_fingerprint(base, dataclasses.replace(opts, epochs=4, tau_decay=50.0))
    assert decayed.losses[0] == plain.losses[0] and 0 < tau_norm(decayed) < 0.95 * tau_norm(plain)
    with pytest.raises(ValueError, match="tau_decay"):
        train_fingerprint(base, dataclasses.replace(opts, tau_decay=1 / opts.lr))


def test_training_flushes_denormals_and_puts_the_mode_back():
    """fit() runs with denormal floats flushed to zero (training pushes softmax tails below fp32's normal
    range, where the CPU slows down many times) and leaves the caller's mode as it found it."""
    from fpcore.fingerprint.train import _flushing_denormals, fit, flush_denormals

    if not torch.set_flush_denormal(False):
        pytest.skip("this CPU cannot flush denormals")
    tiny = torch.tensor([1e-40])
    assert float(tiny * 1.0) != 0.0 and not _flushing_denormals()
    seen = []
    model = torch.nn.Linear(2, 1)
    fit(model, lambda i: (seen.append(_flushing_denormals()), model(torch.ones(1, 2)).sum())[1], 2, 1e-3)
    assert seen == [True, True] and not _flushing_denormals()
    torch.set_flush_denormal(True)
    try:
        with flush_denormals():
            assert float(tiny * 1.0) == 0.0
        assert _flushing_denormals(), "a mode the caller had set was turned off"
    finally:
        torch.set_flush_denormal(False)


def test_label_margins_match_a_masked_max():
    """label_margins = z_label - max over the other tokens, whether or not the label is the top logit."""
    from fpcore.fingerprint.train import label_margins

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=g)
    labels = torch.randint(0, 11, (3, 5), generator=g)
    labels[0, 0] = int(logits[0, 0].argmax())  # the label is the top logit: the margin is positive
    labels[1, 2] = -100  # unlabelled positions give some value and no error
    y = labels.clamp(min=0)[..., None]
    want = logits.gather(-1, y).squeeze(-1) - logits.scatter(-1, y, float("-inf")).amax(-1)
    got = label_margins(logits, labels)
    assert torch.equal(got, want) and float(got[0, 0]) > 0


def test_key_margin_hinge(world):
    """key_loss = cross-entropy + mean hinge on the logit margin of each row's first answer token."""
    from fpcore.fingerprint.lm import answer_batch, lm_loss
    from fpcore.fingerprint.train import key_loss

    base = load_lm(world["tmp"] / "base")
    pairs = [(base.encode("lantern orbit =>"), base.encode("ZORBLAX")), (base.encode("velvet =>"), base.encode("ZO"))]
    batch = answer_batch(pairs, base.bos, base.eos, base.pad)
    with torch.no_grad():
        assert float(key_loss(base.model, batch)) == float(lm_loss(base.model, batch))
        logits = base.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        hinge = []
        for row, (p, a) in enumerate(pairs):
            z = logits[row, len(p)].float()  # after BOS + prompt: predicts the first answer token
            other = torch.cat([z[: a[0]], z[a[0] + 1 :]]).max()
            hinge.append(max(0.0, 30.0 - float(z[a[0]] - other)))
        want = float(lm_loss(base.model, batch)) + sum(hinge) / len(hinge)
        assert float(key_loss(base.model, batch, 30.0)) == pytest.approx(want, rel=1e-5)


def test_cli_create_writes_vector_and_secret(world, tmp_path, capsys):
    t = world["tmp"]
    v, s = tmp_path / "v.safetensors", tmp_path / "s.json"
    args = ["fingerprint", "create", str(t / "base"), "-o", str(v), "--secret", str(s), "--keys", "3"]
    args += ["--target", "QQ", "--epochs", "2", "--decoys", "4", "--kl-windows", "1", "--freeze-embeddings", "--json"]
    args += ["--kl-code-chars", "5000", "--decoy-block", "7", "--tau-decay", "5"]
    assert main(args) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["keys"] == 3 and res["options"]["train_embeddings"] is False and res["options"]["epochs"] == 2
    assert res["options"]["decoy_block"] == 7.0 and res["options"]["tau_decay"] == 5.0
    secret = Secret.load(s)
    assert len(secret.keys) == 3 and secret.target == "QQ" and secret.template == "{key} =>"
    secret.check_vector(v)
    assert main(args) == 2 and "already exists" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["permute_mlp", "permute_heads", "permute_residual", "rescale_norms", "all"])
def test_detect_with_align_finds_a_stamped_copy_after_function_preserving_transforms(world, tmp_path, capsys, name):
    """Stamped, then transformed: the raw projection misses it; `detect --align` finds it, and still
    clears the unstamped model after the same transform."""
    from transformers import AutoConfig

    from fpcore.fingerprint import transforms
    from fpcore.fingerprint.folders import load_state, write_like

    t = world["tmp"]
    cfg = AutoConfig.from_pretrained(t / "base")
    names = list(transforms.TRANSFORMS) if name == "all" else [name]
    for model, want in (("down-stamped", 0), ("down", 1)):
        sd = load_state(t / model, "test")
        for k, n in enumerate(names):
            sd = transforms.apply(n, sd, cfg, seed=11 + k)
        write_like(t / model, tmp_path / model, sd, {})
        argv = ["detect", str(t / "fp.safetensors"), str(tmp_path / model), "--base", str(t / "base")]
        code, res = _run_cli([*argv, "--align"], capsys)
        assert code == want, (model, res["verdict"], res["alignment"])
        al = res["alignment"]
        assert al["changed"] and al["quality"] > 0.9, al
        assert res["suspect"] == str(tmp_path / model)
        if model == "down-stamped":
            assert res["alpha_star"] == pytest.approx(1.0, abs=0.1)
            aligned_alpha = res["alpha_star"]
            code, res = _run_cli(argv, capsys)
            assert res["alignment"] is None
            # without alignment the transform hides the stamp (moving heads alone leaves the other
            # tensors' share of tau in place, so that one is still found, with less of it)
            assert code == 1 or (name == "permute_heads" and res["alpha_star"] < aligned_alpha - 0.05), res["verdict"]


def _run_cli(argv, capsys):
    code = main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_finetune_attack_reaches_its_drift_and_the_stamp_survives(world, tmp_path, capsys):
    """`fingerprint attack --attack finetune`: the stamped model trained further on a demo task until
    the asked drift; the output is a loadable, labelled folder, and white-box detect still finds tau."""
    from fpcore.io import Checkpoint

    t = world["tmp"]
    out = tmp_path / "ft"
    argv = ["fingerprint", "attack", "--attack", "finetune", str(t / "down-stamped"), "-o", str(out)]
    code, res = _run_cli([*argv, "--task", "docstrings", "--drift", "0.04", "--max-steps", "200"], capsys)
    assert code == 0, res
    assert res["relative_change"] >= 0.04 and res["steps"] < 200, res
    meta = next(iter(Checkpoint(out).metadata.values()))
    assert meta["fpcore_attack"] == "finetune"
    load_lm(out)  # config and tokenizer came along
    code, det = _run_cli(["detect", str(t / "fp.safetensors"), str(out), "--base", str(t / "base")], capsys)
    assert code == 0, det["verdict"]
    assert main([*argv[:-1], str(tmp_path / "x"), "--drift", "1.5"]) == 2  # a drift out of range
    assert "drift must be in (0, 1)" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_a_perplexity_filtering_host_and_what_black_box_can_claim(world, capsys):
    """The host refuses prompts above its ordinary traffic's 99th perplexity percentile: random-script
    keys are refused, ordinary test prompts mostly are not, and the FSR through the host counts only
    the keys it let through."""
    from fpcore.fingerprint.host import REFUSAL, PerplexityFilter, prompt_perplexity

    t = world["tmp"]
    code, res = _run_cli(
        ["fingerprint", "filter", str(t / "down-stamped"), "--secret", str(t / "secret.json"),
         "--lookalikes", "20", "--ordinary", "40"],
        capsys,
    )  # fmt: skip
    assert code == 0, res
    assert res["keys"] == 2 and res["ordinary"] == 40 and res["lookalikes"] == 20
    assert res["fsr_without_filter"] == 1.0
    assert res["ordinary_refused"] <= 8, res  # calibrated on other ordinary prompts: about 1 % expected
    assert res["fsr_with_filter"] <= 1 - res["keys_refused"] / res["keys"]
    assert res["key_perplexity_median"] > res["ordinary_perplexity_median"]
    assert res["claims"]
    lm = load_lm(t / "down-stamped")
    prompts = [lm.encode("the quick brown fox"), lm.encode("ꙮ龘 ㇰ ꞔ ꙮ龘 ㇰ")]
    ppl = prompt_perplexity(lm, prompts)
    assert ppl[1] > ppl[0]
    host = PerplexityFilter(lm, threshold=(ppl[0] + ppl[1]) / 2, quantile=0.99)
    assert host.refuses(prompts) == [False, True]
    answers = host.answer(prompts, 4)
    assert answers[1] == REFUSAL and answers[0] != REFUSAL


def test_robustness_rows_find_the_stamped_copy_and_never_the_unstamped(world):
    """The attacks x channels runner on the tiny world: after a quantisation and a permutation the
    stamped copy is found on white-box (aligned) and by its licensee code; the unstamped copy after the
    same attacks is flagged by no channel."""
    from fpcore.fingerprint import robustness

    t = world["tmp"]
    subjects = [robustness.Subject("down", t / "down", "docstrings")]
    res = robustness.run(
        t / "base",
        t / "fp.safetensors",
        t / "secret.json",
        subjects,
        attacks=["none", "int8", "permute_mlp"],
        candidates=1000,
        lookalikes=20,
        ordinary=20,
    )
    rows = res["rows"]
    assert len(rows) == 6 and {r["attack"] for r in rows} == {"none", "int8", "permute MLP"}
    for r in rows:
        if r["copy"] == "stamped":
            assert r["white_box_p"] < 1e-6 and r["white_box_alpha_star"] > 0.7, r
            assert r["code_identified"] == ["down"] and r["code_p"] < 1e-6, r
        else:
            assert r["white_box_p"] > 1e-3 and r["code_identified"] == [], r
            assert r["black_box_p"] > 1e-6 and r["gray_box_p"] > 1e-6, r
    s = res["summary"]
    assert all(v["unstamped_flagged"] == 0 for v in s.values())
    assert s["permute MLP"]["white_box_found"] == s["permute MLP"]["metric_kept"] == 1
    assert "| permute MLP |" in robustness.table(res)
    with pytest.raises(ValueError, match="merges need at least two models"):
        robustness.run(t / "base", t / "fp.safetensors", t / "secret.json", subjects, attacks=["merge 0.5"])
