"""The training losses of a batch."""

import torch
from tiny import random_doc, tiny

from memgpt.training.losses import write_loss


def test_the_write_loss_is_the_answers_probability_averaged_over_the_write_slots():
    model = tiny("llama", memory="slots", num_slots=4).train()
    doc = random_doc(32)[None].repeat(3, 1)  # (3, 32)
    out = model(doc, return_logits=False, return_hidden=True)
    targets = torch.tensor([7, -100, 99])
    loss, n = write_loss(model, out.hidden, targets)
    probs = model.backbone.get_output_embeddings()(out.hidden[:, -4:]).softmax(-1)  # (3, 4, V)
    expected = -(probs[0, :, 7].mean().log() + probs[2, :, 99].mean().log())
    assert n == 2 and torch.allclose(loss, expected, atol=1e-5)
    loss.backward()
    assert model.memory.write_embed.grad.abs().sum() > 0  # it teaches what the write slots say
    assert model.memory.proj.weight.grad is None  # and nothing of how the output enters M_t
