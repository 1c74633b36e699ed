import tempfile

import torch
from tiny import tiny

from memgpt import MemGPT
from memgpt.layout import column_major_linears, is_column_major


def linear_weights(model: MemGPT) -> list[torch.Tensor]:
    return [m.weight for m in model.backbone.modules() if isinstance(m, torch.nn.Linear)]


def test_eval_on_a_cpu_stores_the_linear_weights_column_major_and_train_restores_them():
    model = tiny("llama")
    layers = linear_weights(model)
    assert layers and all(is_column_major(w) for w in layers)
    values = [w.detach().clone() for w in layers]
    model.train()
    assert all(w.is_contiguous() for w in layers)
    assert all(torch.equal(w, v) for w, v in zip(layers, values, strict=True))
    model.eval()
    assert all(is_column_major(w) for w in layers)
    assert column_major_linears(model.backbone) == 0  # already so: nothing changes twice


def test_a_tied_output_layer_keeps_its_rows(smollm2):
    tied = smollm2.backbone.get_output_embeddings().weight
    assert tied is smollm2.backbone.get_input_embeddings().weight
    assert tied.is_contiguous()  # the embedding reads whole rows of it
    assert all(is_column_major(w) for w in linear_weights(smollm2) if w is not tied)


def test_column_major_weights_give_the_same_outputs_and_save_as_usual():
    model = tiny("llama")  # untied: the output layer turns column-major too
    ids = torch.randint(0, 4096, (3, 40))
    with torch.no_grad():
        column_major = model.backbone(ids).logits
        column_major_linears(model.backbone, on=False)
        row_major = model.backbone(ids).logits
        column_major_linears(model.backbone, on=True)
    torch.testing.assert_close(column_major, row_major, rtol=1e-5, atol=1e-5)
    assert torch.equal(column_major.argmax(-1), row_major.argmax(-1))
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder, save_backbone=True)
        again = MemGPT.from_pretrained(folder, device="cpu", dtype=torch.float32).eval()
        with torch.no_grad():
            assert torch.equal(again.backbone(ids).logits, column_major)
