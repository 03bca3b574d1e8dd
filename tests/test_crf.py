"""The CRF's forward algorithm and Viterbi against brute-force enumeration of all sequences."""
import itertools

import pytest
import torch

from ktlab.nn.crf import CRF, transition_constraints


def brute_force(crf, emissions, length):
    scores = {}
    for tags in itertools.product(range(crf.num_tags), repeat=length):
        t = torch.tensor([list(tags) + [0] * (emissions.shape[1] - length)])
        mask = torch.zeros(1, emissions.shape[1], dtype=torch.bool)
        mask[0, :length] = True
        scores[tags] = crf.score(emissions, t, mask)[0].item()
    return scores


@pytest.mark.parametrize("num_tags,length,padded", [(3, 4, 4), (4, 3, 5), (2, 1, 3)])
def test_partition_and_viterbi_match_enumeration(num_tags, length, padded):
    torch.manual_seed(num_tags * 10 + length)
    crf = CRF(num_tags)
    with torch.no_grad():
        crf.transitions.normal_()
        crf.start.normal_()
        crf.end.normal_()
    emissions = torch.randn(1, padded, num_tags)
    mask = torch.zeros(1, padded, dtype=torch.bool)
    mask[0, :length] = True
    scores = brute_force(crf, emissions, length)
    log_z = torch.logsumexp(torch.tensor(list(scores.values())), 0)
    torch.testing.assert_close(crf.log_partition(emissions, mask)[0], log_z, atol=1e-5, rtol=1e-5)
    best = max(scores, key=scores.get)
    assert crf.decode(emissions, mask) == [list(best)]


def test_batched_rows_equal_single_rows_and_nll_is_a_probability():
    torch.manual_seed(0)
    crf = CRF(5)
    emissions = torch.randn(3, 6, 5)
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 2 + [0] * 4], dtype=torch.bool)
    tags = torch.randint(0, 5, (3, 6))
    batched = crf.neg_log_likelihood(emissions, tags, mask, reduction="none")
    for b in range(3):
        n = int(mask[b].sum())
        single = crf.neg_log_likelihood(emissions[b:b + 1, :n], tags[b:b + 1, :n], reduction="none")
        torch.testing.assert_close(batched[b], single[0])
    assert (batched > 0).all()
    assert [len(p) for p in crf.decode(emissions, mask)] == [6, 4, 2]


def test_training_learns_transitions():
    torch.manual_seed(0)
    crf = CRF(3)
    emissions = torch.zeros(8, 5, 3)               # no evidence: only transitions can help
    tags = torch.tensor([[0, 1, 2, 0, 1]] * 8)
    opt = torch.optim.Adam(crf.parameters(), lr=0.1)
    for _ in range(100):
        opt.zero_grad()
        loss = crf(emissions, tags)
        loss.backward()
        opt.step()
    assert crf.decode(emissions[:1]) == [[0, 1, 2, 0, 1]]


def test_bad_input_is_named():
    crf = CRF(3)
    with pytest.raises(ValueError, match=r"emissions must be \[batch, time, 3\]"):
        crf.decode(torch.randn(2, 4, 5))
    with pytest.raises(ValueError, match="mask"):
        crf.decode(torch.randn(2, 4, 3), torch.ones(2, 3))
    with pytest.raises(ValueError, match="position 0"):
        crf.decode(torch.randn(1, 2, 3), torch.tensor([[0, 1]]))


def test_iob2_constraints():
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    allowed = transition_constraints(labels)
    assert allowed[1, 2] and allowed[2, 2] and not allowed[0, 2] and not allowed[3, 2]
    assert allowed[0, 1] and allowed[4, 0]
