"""The benchmark's summary says per row what its gap is measured against."""

from benchmarks.allocator import summarize


def _row(seed, short, lp, bound):
    return dict(family="sites-flat", n=10_000, T=96, seed=seed, short=short, lp=lp, bound=bound, total=0.4,
                load=1.0, used="greedy", viol=0.0, dep=0.0, rss=100.0, greedy=short, proportional=5.0, llf=6.0)


def _line(rows):
    return summarize(rows)[1].split()


def test_gap_is_against_the_lp_where_it_solved_else_the_bound():
    both = _line([_row(1, 1.05, 1.0, 0.0), _row(2, 1.20, 1.1, 0.1)])
    assert both[8:12] == ["0.075/", "0.100", "LP", "1.100"]
    none = _line([_row(1, 1.05, None, 0.0), _row(2, 1.20, None, 0.1)])
    assert none[8:11] == ["1.075/", "1.100", "bound"]
    mixed = _line([_row(1, 1.05, 1.0, 0.0), _row(2, 1.20, None, 0.1)])  # seed 1 vs its LP, seed 2 vs its bound
    assert mixed[8:11] == ["0.575/", "1.100", "LP1/2"]
