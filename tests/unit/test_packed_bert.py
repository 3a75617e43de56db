"""Packed tokens (zsc_server.torch_bert.forward_packed): a batch's sequences end to end, no padding, attention
within each sequence; the same logits and embeddings as the padded forward pass. On the CPU the attention is
one block-diagonal product; on a CUDA GPU FlashAttention's variable-length kernel (the gpu-marked test)."""

from __future__ import annotations

import pytest
import torch

from zsc_server.torch_bert import BertShape, PlainBert, pack

LENGTHS = [5, 17, 9, 32, 1, 12]  # one row is the whole bucket, one a lone [CLS]


def padded_batch(lengths: list[int], vocab: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    input_ids = torch.randint(1, vocab, (len(lengths), width), generator=generator)
    attention_mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()
    token_type_ids = ((torch.arange(width)[None, :] >= torch.tensor(lengths)[:, None] // 2) * attention_mask).long()
    return input_ids * attention_mask, attention_mask, token_type_ids


def model(head: str, seed: int = 0) -> PlainBert:
    torch.manual_seed(seed)
    shape = BertShape(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=64, num_labels=3 if head == "classifier" else 0, head=head)
    return PlainBert(shape).eval()


@pytest.mark.parametrize("head", ["classifier", "mean_pool"])
def test_packed_tokens_give_the_padded_batchs_outputs(head):
    bert = model(head)
    input_ids, attention_mask, token_type_ids = padded_batch(LENGTHS, 100)
    packed = pack(input_ids, attention_mask, token_type_ids)
    assert packed.input_ids.shape == (sum(LENGTHS),) and packed.max_seqlen == 32
    assert packed.cu_seqlens.tolist() == [0, 5, 22, 31, 63, 64, 76]
    assert packed.position_ids[5:8].tolist() == [0, 1, 2]  # each sequence counts its positions from 0
    with torch.no_grad():
        padded = bert(input_ids, attention_mask, token_type_ids)
        unpadded = bert.forward_packed(packed.input_ids, packed.token_type_ids, packed.position_ids,
                                       packed.cu_seqlens, packed.max_seqlen)
    assert unpadded.shape == padded.shape
    torch.testing.assert_close(unpadded, padded, atol=1e-4, rtol=0)


def test_a_sequence_is_not_changed_by_the_others_it_is_packed_with():
    bert = model("classifier")
    input_ids, attention_mask, token_type_ids = padded_batch(LENGTHS, 100)
    with torch.no_grad():
        together = bert.forward_packed(*vars(pack(input_ids, attention_mask, token_type_ids)).values())
        alone = [bert.forward_packed(*vars(pack(input_ids[i:i + 1], attention_mask[i:i + 1],
                                                token_type_ids[i:i + 1])).values()) for i in range(len(LENGTHS))]
    torch.testing.assert_close(together, torch.cat(alone), atol=1e-5, rtol=0)


@pytest.mark.gpu
def test_packed_tokens_on_the_gpu_use_the_variable_length_kernel_and_agree_in_fp16():
    if not torch.cuda.is_available():
        pytest.skip("FlashAttention's variable-length kernel needs a CUDA GPU")
    bert = model("classifier").to("cuda", torch.float16)
    input_ids, attention_mask, token_type_ids = (t.cuda() for t in padded_batch(LENGTHS, 100))
    packed = pack(input_ids, attention_mask, token_type_ids)
    with torch.no_grad():
        padded = bert(input_ids, attention_mask, token_type_ids)
        unpadded = bert.forward_packed(packed.input_ids, packed.token_type_ids, packed.position_ids,
                                       packed.cu_seqlens, packed.max_seqlen)
    torch.testing.assert_close(unpadded, padded, atol=2e-2, rtol=0)
