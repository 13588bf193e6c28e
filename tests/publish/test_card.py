"""Model cards written from the manifests of a model, tokenizer and evaluation the project made."""

from __future__ import annotations

import json
import shutil

import pytest

from tonsai.errors import StageError
from tonsai.publish.card import hub_datasets, model_card, tokenizer_card
from tonsai.publish.push import make_card

from ..conftest import SAMPLE


@pytest.fixture(scope="module")
def eval_dir(trained_model, sample_pipeline, tmp_path_factory):
    from tonsai.eval.run import EvalConfig, run_eval

    out = tmp_path_factory.mktemp("card_eval")
    run_eval(EvalConfig(model_dir=str(trained_model), dataset_dir=str(sample_pipeline / "data"),
                        output_dir=str(out), device="cpu"))
    return out


def test_model_card_reports_data_tokenizer_training_and_evaluation(trained_model, sample_pipeline, eval_dir):
    from huggingface_hub import ModelCard

    text = model_card(trained_model, "someone/tonsai-tiny", eval_dir, license="apache-2.0")
    card = ModelCard(text)  # huggingface_hub parses and checks the metadata
    data = card.data.to_dict()
    assert data["language"] == ["km", "en"] and data["license"] == "apache-2.0"
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "text-generation"
    assert "tonsai" in data["tags"] and "datasets" not in data  # local files are no Hub datasets
    body = card.text
    # data: sources, documents, characters per language and the mix, from the dataset manifest
    prep = json.loads((sample_pipeline / "data" / "manifest.json").read_text())
    km = prep["mixture"]["km"]
    assert f"| Khmer (`km`) | {km['selected_chars']:,} | {km['selected_docs']:,} |" in body
    assert f"| `km.txt` | Khmer (`km`) | {prep['counts']['km:km.txt']['kept']:,} |" in body
    assert str(sample_pipeline) not in body  # local paths stay private
    # tokenizer fertility, from fertility.json
    fert = json.loads((sample_pipeline / "tok" / "fertility.json").read_text())
    km_fert = fert["sets"]["validation split"]["results"]["tonsai"]["km"]["per_1k_chars"]
    assert f"{km_fert:.1f}" in body
    # training, from the run manifest
    run = json.loads((trained_model.parent / "manifest.json").read_text())
    assert f"| optimizer steps | {run['global_step']:,} |" in body
    assert f"| tokens seen | {run['global_step'] * run['tokens_per_step']:,} |" in body
    assert f"| final validation loss, Khmer (`km`) | {run['final_validation']['eval_km_loss']:.4f} |" in body
    # the resolved accumulation (the flag may be unset: --global-batch-tokens decides it)
    assert f"| gradient accumulation | {run['budget']['gradient_accumulation']} |" in body
    assert f"| mean training loss (whole run) | {run['train_loss']:.4f} |" in body
    # evaluation, from report.json
    report = json.loads((eval_dir / "report.json").read_text())
    en = report["languages"]["en"]
    assert f"| English (`en`) | {en['loss']:.4f} | {en['perplexity']:.4f} | {en['bits_per_byte']:.4f} |" in body
    for heading in ("## Intended use", "## Limitations", "not instruction-tuned", "Khmer specifics"):
        assert heading in body


@pytest.fixture(scope="module")
def sft_run(trained_model, tmp_path_factory):
    """An SFT run of the project's tiny model on the shipped conversations (2 steps, no checkpoint)."""
    from tonsai.sft.config import SftConfig
    from tonsai.sft.run import run_sft

    out = tmp_path_factory.mktemp("card_sft") / "sft"
    run_sft(SftConfig(model_dir=str(trained_model), output_dir=str(out), data=[str(SAMPLE / "conversations.jsonl")],
                      micro_batch_size=4, max_steps=2, eval_steps=2, save_steps=100, logging_steps=1,
                      learning_rate=1e-3, seed=0, device="cpu", dataloader_workers=0, report_to=["none"]))
    return out


def test_card_of_an_instruction_tuned_model_describes_the_tuning_and_its_base(sft_run, sample_pipeline, tmp_path):
    from huggingface_hub import ModelCard

    run = json.loads((sft_run / "manifest.json").read_text())
    for folder in (sft_run / "final", shutil.copytree(sft_run / "final", tmp_path / "copied")):  # in its run, and alone
        card = ModelCard(model_card(folder, "someone/tonsai-tiny-chat"))
        tags, body = card.data.to_dict()["tags"], card.text
        assert {"sft", "instruction-tuned", "conversational"} <= set(tags) and "base-model" not in tags
        assert "instruction-tuned (SFT) chat model" in body and "full fine-tuning of every weight" in body
        assert "`run/final`, a tonsai base model pretrained from scratch" in body
        assert "not instruction-tuned" not in body and "pretrained from scratch with tonsai" not in body
        assert "was not available" not in body and "not found beside the model folder" not in body
        assert "apply_chat_template" in body
        # the SFT run's manifest: conversations, settings, steps, last validation
        counts = run["data"]["counts"][str(SAMPLE / "conversations.jsonl")]
        assert f"| `conversations.jsonl` | {counts['read']} | {counts['kept']} | {counts['train']} |" in body
        assert f"| optimizer steps | {run['global_step']} |" in body
        assert f"| final validation loss, Khmer (`km`) | {run['final_validation']['eval_km_loss']:.4f} |" in body
        assert "| added tokens | `<|system|>` `<|user|>` `<|assistant|>` `<|end|>` |" in body
        # the base model's pretraining data and tokenizer, from its manifests
        assert "## Base model's pretraining data" in body and "| `km.txt` | Khmer (`km`) |" in body
        assert "A byte-fallback BPE of 512 tokens" in body
        assert str(sample_pipeline) not in body and str(SAMPLE) not in body  # local paths stay private


def test_an_evaluation_of_another_model_is_refused(trained_model, sft_run, eval_dir, tmp_path):
    report = json.loads((eval_dir / "report.json").read_text())
    assert report["model_dir"] == str(trained_model)
    with pytest.raises(StageError, match=f"--eval-dir .*report.json: it evaluates {trained_model}, a model made .*, "
                                         f"not {sft_run / 'final'}"):
        model_card(sft_run / "final", "someone/x", eval_dir)
    # a copy of the evaluated model is that model; a folder without a manifest is matched by its path only
    copy = shutil.copytree(trained_model, tmp_path / "copy")
    assert "| English (`en`) |" in model_card(copy, "someone/x", eval_dir)
    (copy / "manifest.json").unlink()
    with pytest.raises(StageError, match="nothing it records shows"):
        model_card(copy, "someone/x", eval_dir)
    with pytest.raises(StageError, match=f"--eval-dir {tmp_path}: no report.json there"):
        model_card(trained_model, "someone/x", tmp_path)


def test_card_of_a_folder_loads_back(trained_model, tmp_path):
    from huggingface_hub import ModelCard

    folder = tmp_path / "final"
    shutil.copytree(trained_model, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["config"]["dataset_dir"] = str(tmp_path / "gone")  # a dataset left on another machine
    (folder / "manifest.json").write_text(json.dumps(manifest))
    kind, text = make_card(folder, "someone/tiny")
    assert kind == "model" and not (folder / "README.md").exists()
    card = ModelCard(text)
    assert card.data.license == "other"
    assert f"The dataset manifest ({tmp_path / 'gone'}) was not available" in card.text
    assert "run manifest | not found beside the model folder" in card.text  # no run folder around this copy
    assert "No evaluation report was given" in card.text


def test_tokenizer_card(sample_pipeline):
    from huggingface_hub import ModelCard

    card = ModelCard(tokenizer_card(sample_pipeline / "tok", "someone/tok", license="cc-by-4.0"))
    assert card.data.license == "cc-by-4.0" and "tokenizer" in card.data.tags
    assert "A byte-fallback BPE of 512 tokens" in card.text and "Khmer specifics" in card.text


def test_hub_sources_become_card_datasets(tmp_path):
    local = tmp_path / "org" / "local"
    local.mkdir(parents=True)
    manifest = {"sources": [{"path": "hf:HuggingFaceFW/fineweb-2:khm_Khmr:train"}, {"path": "news.txt"},
                            {"path": "hf:HuggingFaceFW/fineweb-2:eng_Latn"}, {"path": f"hf:{local}"}]}
    assert hub_datasets(manifest) == ["HuggingFaceFW/fineweb-2"]


def test_bad_license_and_wrong_folder_are_refused(trained_model, sample_pipeline, tmp_path):
    with pytest.raises(StageError, match="--license 'Apache 2'"):
        model_card(trained_model, "someone/x", license="Apache 2")
    with pytest.raises(StageError, match="neither a model folder"):
        make_card(sample_pipeline / "data", "someone/x")


def test_a_suite_run_with_a_limit_keeps_its_caveat_in_the_card():
    from tonsai.publish.card import eval_section

    report = {"block_size": 128, "stride": 64, "suites": {"khmer_core": {"qa_km": {"f1": 0.1, "n": 3}}}}
    assert not any("--limit" in line for line in eval_section(report))
    text = "\n".join(eval_section({**report, "suite_limit": 3}))
    assert "At most 3 examples per task (`--limit`): a quick look, not a benchmark figure." in text
