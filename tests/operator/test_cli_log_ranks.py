"""How `ftjob logs --rank N` finds a process's pod and its lines in a log that several processes share.

tests/e2e/test_multi_rank.py runs the same through the sandbox; these pin down the cases a two-rank run
does not reach (a line split across chunks, a log without a final newline, a rank out of range).
"""

from __future__ import annotations

import pytest
from finetune_cli.ranks import RankLines, last_lines, node_of, pod_shape


def test_the_pod_contract_variables_give_the_layout_and_a_missing_one_counts_as_one():
    assert pod_shape({"NNODES": "2", "NPROC_PER_NODE": "4", "WORLD_SIZE": "8"}) == (2, 4)
    assert pod_shape({"NNODES": "3"}) == (3, 1)
    assert pod_shape({"NNODES": "0", "NPROC_PER_NODE": "x"}) == (1, 1)


@pytest.mark.parametrize(
    ("nodes", "per_node", "nodes_of_ranks"),
    [(2, 1, [0, 1]), (1, 2, [0, 0]), (2, 2, [0, 0, 1, 1]), (3, 4, [0] * 4 + [1] * 4 + [2] * 4)],
    ids=["2x1", "1x2", "2x2", "3x4"],
)
def test_a_rank_runs_on_the_node_of_its_block_of_processes(nodes, per_node, nodes_of_ranks):
    assert [node_of(rank, nodes, per_node) for rank in range(nodes * per_node)] == nodes_of_ranks


@pytest.mark.parametrize("rank", [-1, 2])
def test_a_rank_outside_the_job_names_the_jobs_ranks(rank):
    with pytest.raises(ValueError, match=rf"^rank {rank} is not one of this job's ranks 0-1 \(1 node × 2 processes\)$"):
        node_of(rank, 1, 2)


SHARED_LOG = (
    b"Setting OMP_NUM_THREADS for each process\n"
    b"[rank0]:INFO finetune_trainer: precision fp32\n"
    b"[rank1]:INFO finetune_trainer: precision fp32\n"
    b"[rank1]:[rank1]:[W1207 reducer.cpp:1529] Warning: find_unused_parameters=True\n"
    b"[rank0]:INFO finetune_trainer: done: {}\n"
    b"[rank10]:INFO finetune_trainer: a rank with two digits\n"
    b"a line nobody marked"
)


@pytest.mark.parametrize("chunk_size", [1, 7, len(SHARED_LOG)])
def test_a_rank_sees_its_own_lines_and_the_unmarked_ones_however_the_stream_is_cut(chunk_size):
    lines = RankLines(1)
    chunks = [SHARED_LOG[i : i + chunk_size] for i in range(0, len(SHARED_LOG), chunk_size)]
    seen = b"".join(lines.feed(chunk) for chunk in chunks) + lines.finish()
    assert seen == (
        b"Setting OMP_NUM_THREADS for each process\n"
        b"[rank1]:INFO finetune_trainer: precision fp32\n"
        b"[rank1]:[rank1]:[W1207 reducer.cpp:1529] Warning: find_unused_parameters=True\n"
        b"a line nobody marked"
    )


def test_rank_0_does_not_take_rank_10s_lines():
    lines = RankLines(0)
    seen = lines.feed(SHARED_LOG) + lines.finish()
    assert b"[rank10]" not in seen and b"[rank1]" not in seen
    assert b"[rank0]:INFO finetune_trainer: done: {}\n" in seen


def test_the_last_lines_are_cut_as_the_api_servers_tail_lines():
    assert last_lines(b"a\nb\nc\n", 2) == b"b\nc\n"
    assert last_lines(b"a\nb\nc", 1) == b"c"
    assert last_lines(b"a\nb\n", 0) == b""
    assert last_lines(b"a\nb\n", None) == b"a\nb\n"
