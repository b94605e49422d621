"""course/grading/parts.py hands chapter 5 the learner's own parts where they pass their checks, the
reference where they do not, and never writes to the notebooks it reads."""

import hashlib

import nbformat
import pytest

from course import notebooks
from course.grading.parts import PARTS, learner_model, learner_parts
from solutions import attention, embeddings, layernorm, mlp
from solutions.config import TINY

REFERENCES = {
    "Embed": embeddings.Embed,
    "PosEmbed": embeddings.PosEmbed,
    "Unembed": embeddings.Unembed,
    "Attention": attention.Attention,
    "MLP": mlp.MLP,
    "LayerNorm": layernorm.LayerNorm,
}


def write(folder, stem, *sources):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nbformat.write(nb, folder / f"{stem}.ipynb")


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob("*.ipynb")}


def test_solved_notebooks_give_the_learner_s_classes_untouched(capsys):
    before = digest(notebooks.SOLVED)
    parts = learner_parts(notebooks.SOLVED)
    out = capsys.readouterr().out
    assert out.count("yours      passed its check") == len(PARTS), out
    for name, cls in parts.items():
        assert cls is not REFERENCES[name] and cls.__module__.startswith("notebook_"), name
    assert digest(notebooks.SOLVED) == before


def test_untouched_exercise_notebooks_give_the_reference(capsys):
    parts = learner_parts(notebooks.EXERCISES)
    out = capsys.readouterr().out
    assert out.count("reference  not started (still raises NotImplementedError)") == len(PARTS)
    assert parts == REFERENCES


def test_a_folder_without_notebooks_gives_the_reference(tmp_path, capsys):
    assert learner_parts(tmp_path) == REFERENCES
    assert "no 02_attention.ipynb in this folder" in capsys.readouterr().out


LAYER_NORM = """
class LayerNorm(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.w = nn.Parameter(torch.ones(cfg.d_model))
        self.b = nn.Parameter(torch.zeros(cfg.d_model))

    def forward(self, x):
        x = x - x.mean(-1, keepdim=True)
        return x / (x.var(-1, keepdim=True, unbiased={unbiased}) + self.cfg.layer_norm_eps).sqrt() * self.w + self.b
"""
IMPORTS = "import torch\nfrom torch import nn"


def test_a_passing_part_is_used_and_a_failing_one_is_not(tmp_path, capsys):
    write(tmp_path, "04_layernorm", IMPORTS, LAYER_NORM.format(unbiased=False))
    assert learner_parts(tmp_path)["LayerNorm"] is not layernorm.LayerNorm
    write(tmp_path, "04_layernorm", IMPORTS, LAYER_NORM.format(unbiased=True))
    capsys.readouterr()
    assert learner_parts(tmp_path)["LayerNorm"] is layernorm.LayerNorm
    out = capsys.readouterr().out
    assert "LayerNorm  reference  failed its check: the output is wrong" in out, out


def test_only_definitions_run(tmp_path, capsys):
    write(
        tmp_path,
        "04_layernorm",
        "%matplotlib inline\n" + IMPORTS,
        "raise SystemExit('cells with computations must not run')",
        "open('written.txt', 'w').write('no')",
        LAYER_NORM.format(unbiased=False) + "\nprint('not run')",
        "this is not python (",
    )
    assert learner_parts(tmp_path)["LayerNorm"] is not layernorm.LayerNorm
    assert not (tmp_path / "written.txt").exists()


ATTENTION = """
def apply_causal_mask(attn_scores):
    raise NotImplementedError()


class Attention(solutions_attention.Attention):
    def attn_scores(self, x):
        q = torch.einsum("bpd,hde->bphe", x, self.W_Q) + self.b_Q
        k = torch.einsum("bpd,hde->bphe", x, self.W_K) + self.b_K
        return apply_causal_mask(torch.einsum("bqhe,bkhe->bhqk", q, k) / q.shape[-1] ** 0.5)
"""


@pytest.mark.parametrize("mask", ["stub", "written"])
def test_a_part_s_failing_helper_falls_back_as_in_its_own_notebook(tmp_path, mask):
    # The learner's Attention calls their own apply_causal_mask: a stub there is replaced by
    # the reference (as the chapter's notebook did after its check), so Attention passes.
    source = ATTENTION
    if mask == "written":
        source = source.replace(
            "raise NotImplementedError()",
            "n = attn_scores.shape[-1]\n    future = torch.ones(n, n, dtype=torch.bool).triu(1)"
            "\n    return attn_scores.masked_fill(future, float('-inf'))",
        )
    write(
        tmp_path,
        "02_attention",
        IMPORTS + "\nimport solutions.attention as solutions_attention",
        source,
    )
    assert learner_parts(tmp_path, quiet=True)["Attention"] is not attention.Attention


BLOCK = """
class TransformerBlock(nn.Module):
    def __init__(self, cfg, fused=False):
        super().__init__()
        self.ln1, self.attn = LayerNorm(cfg), Attention(cfg)
        self.ln2, self.mlp = LayerNorm(cfg), MLP(cfg)

    def forward(self, x):
        x = {attn}
        return x + self.mlp(self.ln2(x))
"""
MODEL = """
class Transformer(nn.Module):
    def __init__(self, cfg, fused=False):
        super().__init__()
        self.cfg = cfg
        self.embed, self.pos_embed = Embed(cfg), PosEmbed(cfg)
        self.blocks = nn.ModuleList([TransformerBlock(cfg) for _ in range(cfg.n_layers)])
        self.ln_final, self.unembed = LayerNorm(cfg), Unembed(cfg)

    def forward(self, tokens):
        x = self.embed(tokens) + self.pos_embed(tokens)
        for block in self.blocks:
            x = block(x)
        return self.unembed(self.ln_final(x))
"""


def test_the_model_is_built_of_the_learner_s_parts_where_they_pass(tmp_path, capsys):
    from solutions import transformer

    write(tmp_path, "04_layernorm", IMPORTS, LAYER_NORM.format(unbiased=False))
    post_norm = BLOCK.format(attn="self.ln1(x + self.attn(x))")
    write(tmp_path, "05_residual_stream", IMPORTS, post_norm, MODEL)
    parts = learner_model(tmp_path)
    out = capsys.readouterr().out
    assert "TransformerBlock  reference  failed its check" in out, out
    assert "Transformer       yours      passed its check" in out, out
    model = parts["Transformer"](TINY)
    # The learner's model, the reference's block (its code), and the learner's LayerNorm in both.
    assert type(model).__module__ == "notebook_05_residual_stream"
    block = model.blocks[0]
    assert isinstance(block, transformer.TransformerBlock)
    assert type(block) is not transformer.TransformerBlock
    assert type(block.ln1) is type(model.ln_final) is parts["LayerNorm"]
    assert parts["LayerNorm"] is not layernorm.LayerNorm
    assert type(block.attn) is attention.Attention  # no 02_attention.ipynb: the reference


def test_without_chapter_5_the_reference_model_reads_the_learner_s_parts(tmp_path, capsys):
    write(tmp_path, "04_layernorm", IMPORTS, LAYER_NORM.format(unbiased=False))
    parts = learner_model(tmp_path)
    assert "Transformer       reference  no 05_residual_stream.ipynb" in capsys.readouterr().out
    model = parts["Transformer"](TINY)
    assert type(model.ln_final) is type(model.blocks[1].ln2) is parts["LayerNorm"]
    written = BLOCK.format(attn="x + self.attn(self.ln1(x))")
    write(tmp_path, "05_residual_stream", IMPORTS, written)  # a block, but no model
    parts = learner_model(tmp_path, quiet=True)
    block = parts["Transformer"](TINY).blocks[0]
    assert type(block) is parts["TransformerBlock"]
    assert type(block).__module__ == "notebook_05_residual_stream"


def test_the_solved_notebooks_give_the_learner_s_whole_model(capsys):
    parts = learner_model(notebooks.SOLVED)
    out = capsys.readouterr().out
    assert out.count("yours      passed its check") == len(PARTS) + 2, out
    model = parts["Transformer"](TINY)
    chapter_5 = "notebook_05_residual_stream"
    assert type(model).__module__ == type(model.blocks[0]).__module__ == chapter_5
    assert type(model.blocks[0].attn).__module__ == "notebook_02_attention"
