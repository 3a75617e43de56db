"""Concurrent requests each get their own answer; dynamic batching does not change answers."""

from __future__ import annotations

import asyncio
import random
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from zsc_client import AsyncZeroShotClient, InvalidInputError

TEXTS = [
    "我的快递三天了还没到，请帮我查一下物流。",
    "这个产品质量太差了，我要投诉！",
    "希望增加夜间模式功能。",
    "客服电话打不通，售后维修太慢。",
    "the app crashes every time i open settings",
    "服务态度很好，表扬客服。",
]
LABEL_SETS = [["咨询", "投诉", "建议"], ["物流", "退款", "表扬", "维修"], ["bug report", "praise"],
              [f"类型{i}" for i in range(12)]]


def _requests(count: int, seed: int = 7):
    rng = random.Random(seed)
    return [(rng.choice(TEXTS) * rng.randint(1, 4), rng.choice(LABEL_SETS), rng.random() < 0.3)
            for _ in range(count)]


def test_threads_get_their_own_answers(structbert, protocol):
    requests = _requests(48)
    with structbert.client(protocol) as client:
        expected = [client.classify(t, labels, multi_label=ml) for t, labels, ml in requests]

    def classify(request):
        text, labels, ml = request
        with structbert.client(protocol) as client:  # one client per thread
            return client.classify(text, labels, multi_label=ml)

    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(classify, requests))
    for (text, labels, _), got, want in zip(requests, results, expected):
        assert got.text == text
        assert sorted(got.labels) == sorted(labels)
        assert got.labels == want.labels
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)


def test_batch_helper_keeps_order(structbert, protocol):
    texts = [text for text, _, _ in _requests(20, seed=3)]
    with structbert.client(protocol) as client:
        batch = client.classify_batch(texts, "咨询,投诉,建议")
        single = [client.classify(text, "咨询,投诉,建议") for text in texts]
    assert [r.text for r in batch] == texts
    for got, want in zip(batch, single):
        assert got.labels == want.labels
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)


def test_async_client(structbert, protocol):
    requests = _requests(24, seed=11)
    with structbert.client(protocol) as client:
        expected = [client.classify(t, labels, multi_label=ml) for t, labels, ml in requests]
    url = structbert.server.grpc_url if protocol == "grpc" else structbert.server.http_url

    async def run():
        async with AsyncZeroShotClient(url, protocol) as client:
            await client.wait_until_ready(timeout_s=10)
            one = await asyncio.gather(*(client.classify(t, labels, multi_label=ml) for t, labels, ml in requests))
            many = await client.classify_batch([t for t, _, _ in requests], ["咨询", "投诉"], max_concurrency=4)
            return one, many

    results, batch = asyncio.run(run())
    for got, want in zip(results, expected):
        assert got.labels == want.labels
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)
    assert [r.text for r in batch] == [t for t, _, _ in requests]


def test_an_async_batch_with_a_refused_text_raises_and_leaves_no_request_running(structbert, protocol):
    url = structbert.server.grpc_url if protocol == "grpc" else structbert.server.http_url
    texts = ["", *(text for text, _, _ in _requests(40, seed=5))]  # the empty text is refused at once

    async def run() -> set:
        async with AsyncZeroShotClient(url, protocol) as client:
            with pytest.raises(InvalidInputError, match="TEXT"):
                await client.classify_batch(texts, ["咨询", "投诉"], max_concurrency=8)
            return asyncio.all_tasks() - {asyncio.current_task()}

    assert asyncio.run(run()) == set()
