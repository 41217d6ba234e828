"""fpcore.verdict: the exact tests against hand-computed small cases, and the channel combination."""

import math

import pytest

from fpcore.verdict import Channel, binomial_tail, combine, normal_tail, rank_sum_tail, ranks_against


def test_rank_sum_tail_hand_computed():
    # keys rank 4 and 5 of 5: only {4, 5} of the C(5, 2) = 10 subsets reaches W = 9
    assert rank_sum_tail([5.0, 4.0], [1.0, 2.0, 3.0]) == (pytest.approx(0.1), 9)
    # keys rank 2 and 4: W = 6; the subsets with sum >= 6 are {1,5} {2,4} {2,5} {3,4} {3,5} {4,5}
    assert rank_sum_tail([3.0, 1.0], [2.0, 0.0, 4.0]) == (pytest.approx(0.6), 6)
    # one key above all of n negatives: p = 1 / (n + 1)
    assert rank_sum_tail([9.0], [0.0] * 7)[0] == pytest.approx(1 / 8)
    # m keys above all n negatives: p = 1 / C(m + n, m)
    assert rank_sum_tail([10.0 + i for i in range(10)], list(range(-200, 0)))[0] == pytest.approx(
        1 / math.comb(210, 10)
    )


def test_rank_sum_ties_and_nan_count_against_the_keys():
    assert ranks_against([1.0], [1.0, 1.0]) == [1]
    assert rank_sum_tail([1.0, 1.0], [1.0, 1.0, 1.0])[0] == 1.0  # all tied: no evidence
    assert ranks_against([float("nan"), 2.0], [1.0]) == [1, 3]
    with pytest.raises(ValueError, match="needs keys and negatives"):
        rank_sum_tail([], [1.0])


def test_rank_sum_is_a_valid_p_value_under_the_null():
    # all C(6, 3) = 20 placements of 3 keys among 6 distinct scores: P[p <= a] <= a for every a
    import itertools

    scores = list(range(6))
    ps = []
    for keys in itertools.combinations(scores, 3):
        ps.append(rank_sum_tail(list(keys), [s for s in scores if s not in keys])[0])
    for a in sorted(set(ps)):
        assert sum(p <= a for p in ps) / len(ps) <= a + 1e-12


def test_binomial_and_normal_tails():
    assert binomial_tail(0, 10, 0.3) == 1.0
    assert binomial_tail(10, 10, 0.5) == pytest.approx(0.5**10)
    assert binomial_tail(1, 3, 0.1) == pytest.approx(1 - 0.9**3)
    assert normal_tail(0.0) == pytest.approx(0.5)
    assert normal_tail(1.959963984540054) == pytest.approx(0.025)
    assert normal_tail(10.0) == pytest.approx(7.619853e-24, rel=1e-6)
    assert normal_tail(float("nan")) == 1.0


def test_combine_is_bonferroni_over_the_channels_that_ran():
    a = Channel("black_box", 0.5, 0.0, "fsr", "")
    b = Channel("gray_box", 1e-9, 0.9, "auc", "")
    c = Channel("white_box", 1.0, 0.0, "z", "not run", ran=False)
    v = combine([a, b, c])
    assert v.p == pytest.approx(2e-9) and v.fingerprinted
    assert set(v.as_dict()["channels"]) == {"black_box", "gray_box", "white_box"}
    assert not combine([a, Channel("gray_box", 6e-7, 0.9, "auc", "")]).fingerprinted  # 1.2e-6 >= 1e-6
    with pytest.raises(ValueError, match="no channel ran"):
        combine([c])
