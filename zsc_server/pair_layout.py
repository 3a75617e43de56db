"""Assemble (text, hypothesis) pairs the way the tokenizer's post-processor does, without calling it per pair.

`Tokenizer.post_process` costs about 20 µs per pair; a request with 6 labels spent more time there than in
tokenizing. The post-processor's pair layout is fixed ("[CLS] A [SEP] B [SEP]" with type ids 0/1 for BERT,
"<s> A </s></s> B </s>" for RoBERTa-style ones...): `PairLayout.learn` reads it once off one real
`post_process` result (its `sequence_ids` mark the special tokens), then pairs are concatenated with numpy.
Truncation is the post-processor's `only_first`: the text loses tokens from its end until the pair fits,
and a hypothesis that leaves no text token at all is an error, as in `tokenizers`.

`PairLayout.learn` returns None for a post-processor whose layout is not prefix / A / middle / B / suffix,
and the caller keeps `post_process`; tokenization.PairTokenizer also checks the layout against
`post_process` on sample pairs before using it.
"""

from __future__ import annotations

from tokenizers import Tokenizer


class NoRoomForText(ValueError):
    """The hypothesis and the special tokens fill max_length: no text token would be left."""


class PairLayout:
    """The special tokens (ids and type ids) before the text, between text and hypothesis, and after it."""

    def __init__(self, prefix: list[tuple[int, int]], middle: list[tuple[int, int]], suffix: list[tuple[int, int]],
                 text_type: int, hypothesis_type: int) -> None:
        # plain lists: concatenating a few dozen ints is faster than numpy for rows this short
        self.prefix, self.prefix_types = [t for t, _ in prefix], [y for _, y in prefix]
        self.middle, self.middle_types = [t for t, _ in middle], [y for _, y in middle]
        self.suffix, self.suffix_types = [t for t, _ in suffix], [y for _, y in suffix]
        self.text_type, self.hypothesis_type = text_type, hypothesis_type
        self.special_count = len(prefix) + len(middle) + len(suffix)

    @classmethod
    def learn(cls, tokenizer: Tokenizer) -> PairLayout | None:
        first = tokenizer.encode("a", add_special_tokens=False)
        second = tokenizer.encode("b", add_special_tokens=False)
        if not first.ids or not second.ids or first.ids == second.ids:
            return None
        pair = tokenizer.post_process(first, second, add_special_tokens=True)
        ids, types = list(pair.ids), list(pair.type_ids)
        # where the two sequences sit (their tokens are ordinary ones, never the post-processor's specials);
        # a layout that places either twice, or not once, is not one this class reproduces
        text_at = [i for i in range(len(ids)) if ids[i:i + len(first.ids)] == first.ids]
        if len(text_at) != 1:
            return None
        start = text_at[0] + len(first.ids)
        hypothesis_at = [i for i in range(start, len(ids)) if ids[i:i + len(second.ids)] == second.ids]
        if len(hypothesis_at) != 1:
            return None
        a, b = text_at[0], hypothesis_at[0]
        end = b + len(second.ids)
        text_types, hypothesis_types = set(types[a:start]), set(types[b:end])
        if len(text_types) != 1 or len(hypothesis_types) != 1:
            return None
        return cls(list(zip(ids[:a], types[:a])), list(zip(ids[start:b], types[start:b])),
                   list(zip(ids[end:], types[end:])), text_types.pop(), hypothesis_types.pop())

    def rows(self, text_ids: list[int], hypotheses: list[list[int]],
             max_length: int) -> list[tuple[list[int], list[int]]]:
        """(input ids, type ids) of each pair, the text truncated to fit max_length as `only_first` does.
        Raises NoRoomForText(label index) where a hypothesis leaves no room for any text token."""
        rows = []
        for index, hypothesis in enumerate(hypotheses):
            excess = len(text_ids) + len(hypothesis) + self.special_count - max_length
            keep = len(text_ids) - max(0, excess)
            if excess > 0 and keep <= 0:
                raise NoRoomForText(index)
            ids = self.prefix + text_ids[:keep] + self.middle + hypothesis + self.suffix
            types = (self.prefix_types + [self.text_type] * keep + self.middle_types
                     + [self.hypothesis_type] * len(hypothesis) + self.suffix_types)
            rows.append((ids, types))
        return rows
