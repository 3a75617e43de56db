"""Packed tokens (zsc_server.packing, PlainBert.forward_packed, the python-torch packed layout): a batch's
sequences end to end, no padding, attention within each sequence; the same logits and embeddings as the padded
forward pass, with or without the padding tokens and empty slots a CUDA graph's fixed shapes add. On the CPU
the attention runs per sequence; on a CUDA GPU FlashAttention's variable-length kernel (the gpu-marked tests)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.tiny_bert import requests, right_padded, save_tiny_bert, tiny_bert
from zsc_server.packing import Rows, pack
from zsc_server.torch_bert import PlainBert
from zsc_server.torch_encoder import TorchEncoder

LENGTHS = [5, 17, 9, 32, 1, 12]  # one row is the whole bucket, one a lone [CLS]


def run_packed(bert: PlainBert, arrays: list[np.ndarray], tokens: int | None = None, slots: int | None = None,
               device: str = "cpu") -> torch.Tensor:
    batch = pack(Rows.of([tuple(arrays)]), tokens, slots)
    with torch.no_grad():
        out = bert.forward_packed(*(torch.from_numpy(a).to(device) for a in batch.arrays()), batch.max_seqlen)
    return out[:batch.sequences]


def run_padded(bert: PlainBert, arrays: list[np.ndarray], device: str = "cpu") -> torch.Tensor:
    with torch.no_grad():
        return bert(*(torch.from_numpy(a).to(device) for a in arrays))


@pytest.mark.parametrize("head", ["classifier", "mean_pool"])
@pytest.mark.parametrize("tokens, slots", [(None, None), (96, 9), (76, 6)], ids=["exact", "padded", "full"])
def test_packed_tokens_give_the_padded_batchs_outputs(head, tokens, slots):
    bert = tiny_bert(head)
    arrays = right_padded(LENGTHS)
    packed = run_packed(bert, arrays, tokens, slots)
    padded = run_padded(bert, arrays)
    assert packed.shape == padded.shape
    torch.testing.assert_close(packed, padded, atol=1e-4, rtol=0)


def test_the_packed_batch_holds_each_sequences_tokens_and_positions():
    batch = pack(Rows.of([tuple(right_padded(LENGTHS))]), 96, 9)
    assert batch.cu_seqlens.tolist() == [0, 5, 22, 31, 63, 64, 76, 76, 76, 76]  # empty slots repeat the total
    assert batch.position_ids[5:8].tolist() == [0, 1, 2]  # each sequence counts its positions from 0
    assert batch.slot_of_token[4:6].tolist() == [0, 1] and set(batch.slot_of_token[76:]) == {9}
    assert batch.first_token.tolist() == [0, 5, 22, 31, 63, 64, 76, 76, 76]
    assert (batch.sequences, batch.max_seqlen, len(batch.input_ids)) == (6, 32, 96)


def test_a_sequence_is_not_changed_by_the_others_it_is_packed_with():
    bert = tiny_bert()
    arrays = right_padded(LENGTHS)
    together = run_packed(bert, arrays, 128, 8)
    alone = [run_packed(bert, [a[i:i + 1] for a in arrays], 64, 2) for i in range(len(LENGTHS))]
    torch.testing.assert_close(together, torch.cat(alone), atol=1e-5, rtol=0)


def encoder(tmp_path, layout: str, device: str = "cpu", **options) -> TorchEncoder:
    path = save_tiny_bert(tmp_path / "model.pt")
    return TorchEncoder(str(path), device=device, layout=layout, sequence_buckets=(16, 32), **options)


# requests of different widths (the preprocess' buckets) in one dynamic batch, more rows than max_rows
MIXED = [(16, [3, 16, 7]), (32, [20, 32, 9, 2, 17]), (16, [5] * 4), (32, [31])]


def test_the_packed_layout_answers_a_mixed_batch_as_the_padded_one_does(tmp_path):
    packed = encoder(tmp_path, "packed", max_rows=4)
    padded = encoder(tmp_path, "padded")
    feeds = requests(MIXED)
    assert packed.packed.buckets == (32, 48, 64, 96, 128)  # the longest sequence up to max_rows of them
    batches = packed.packed.batches(Rows.of([tuple(f.values()) for f in feeds]))
    assert [b.sequences for b in batches] == [4, 4, 4, 1]  # at most max_rows per replay, in request order
    got, want = packed.run_batch(feeds), padded.run_batch(feeds)
    assert [g.shape for g in got] == [w.shape for w in want] == [(3, 3), (5, 3), (4, 3), (1, 3)]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-4, rtol=0)


def test_requests_of_no_rows_get_no_rows_back(tmp_path):
    packed = encoder(tmp_path, "packed", max_rows=4)
    [empty] = packed.run_batch([{name: np.zeros((0, 16), np.int64) for name in ("input_ids", "attention_mask",
                                                                                "token_type_ids")}])
    assert empty.shape == (0, 3)


def test_a_row_longer_than_the_graphs_attention_bound_is_refused(tmp_path):
    packed = encoder(tmp_path, "packed", max_rows=4)  # sequence buckets up to 32 tokens
    with pytest.raises(ValueError, match="a row of 40 tokens exceeds the packed layout's 32"):
        packed.run_batch(requests([(48, [5, 40])]))


def test_the_packed_layout_refuses_fp32_on_a_gpu_by_name(tmp_path):
    with pytest.raises(ValueError, match="packed layout.*FP16"):
        encoder(tmp_path, "packed", device="cuda", precision="fp32")


@pytest.mark.gpu
def test_packed_tokens_on_the_gpu_use_the_variable_length_kernel_and_agree_in_fp16():
    if not torch.cuda.is_available():
        pytest.skip("FlashAttention's variable-length kernel needs a CUDA GPU")
    bert = tiny_bert().to("cuda", torch.float16)
    arrays = right_padded(LENGTHS)
    # padding tokens and empty slots, as a CUDA graph's bucket adds them
    torch.testing.assert_close(run_packed(bert, arrays, 96, 9, "cuda"), run_padded(bert, arrays, "cuda"),
                               atol=2e-2, rtol=0)


@pytest.mark.gpu
def test_the_packed_layouts_cuda_graphs_answer_as_the_padded_layouts_do(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("CUDA graphs need a CUDA GPU")
    packed = encoder(tmp_path, "packed", device="cuda", max_rows=4, capture_all=True)
    padded = encoder(tmp_path, "padded", device="cuda", graph_batch_sizes=(1, 2, 4), capture_all=True)
    assert sorted(packed.packed.graphs) == list(packed.packed.buckets)
    feeds = requests(MIXED)
    for _ in range(2):  # the second time through, every graph is replayed again with other inputs
        for g, w in zip(packed.run_batch(feeds), padded.run_batch(feeds)):
            np.testing.assert_allclose(g, w, atol=2e-2, rtol=0)
        feeds = feeds[::-1]
