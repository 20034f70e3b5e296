"""Random small DAGs give the same results on Ray as in one process.

The DAGs are the local parallelism test's (a source, then up to five maps,
filters, flat maps, keyed reduces and dedupes reading one or two earlier
nodes, each at a random parallelism of 1 to 3). A Ray run costs far more
than a local one, so the examples are few: the local test covers
the shapes widely, this one that the cross-process edges (forward,
key-partitioned, rebalance, fan-in from several slots) carry them unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, given, settings

from tests.runtime.test_parallel import dags, run_outputs, with_parallelism

if TYPE_CHECKING:
    from flowstream import Workflow

pytestmark = pytest.mark.usefixtures("ray_cluster")


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(dags())
def test_random_dags_give_the_same_results_on_ray(
    case: tuple[Workflow, dict[str, int]],
) -> None:
    wf, par = case
    expected = run_outputs(wf)
    parallel = with_parallelism(wf, par)
    assert run_outputs(parallel) == expected
    assert run_outputs(parallel, backend="ray") == expected
