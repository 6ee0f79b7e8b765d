"""ingest and filter through datatrove's Ray executor on a real Ray head node:
the page's command gives the local executor's output."""

from __future__ import annotations

from scale_helpers import CORPUS_STAGES, docs_of, outcome_counts, phi1_run_args, run_phi1

DOC_ADDRESS = "127.0.0.1:6379"


def test_ingest_and_filter_on_ray_match_local(ray_cluster, local_reference, embed_cache, tmp_path):
    only, sets = phi1_run_args("ray-corpus")
    assert only == CORPUS_STAGES
    assert f"ingest.executor.ray.address={DOC_ADDRESS}" in sets and "filter.executor.kind=ray" in sets
    sets = [s.replace(DOC_ADDRESS, ray_cluster.address) for s in sets]  # the test's head runs on a free port
    r = run_phi1(tmp_path, "ray", only, sets, extra=[f"embed.cache_dir={embed_cache}"])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run = tmp_path / "ray"
    for stage in ("ingest", "filter"):
        assert docs_of(run / stage / "docs") == docs_of(local_reference / stage / "docs"), stage
        assert outcome_counts(run, stage) == outcome_counts(local_reference, stage), stage
    # the tasks ran as actors of *that* cluster (its session logs), not in a Ray phi1 started itself
    actors = [p for p in ray_cluster.temp_dir.glob("session_*/logs/worker-*.out")
              if ":actor_name:RankWorker" in p.read_text(errors="replace")]
    assert len(actors) >= sum([2, 1, 2, 2, 1, 2]) + 2, len(actors)  # one per task: 6 ingest steps, then filter
    assert "Traceback" not in r.stderr
