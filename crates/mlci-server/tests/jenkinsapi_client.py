"""Drive mlci serve's Jenkins-compatible API with jenkinsapi, unpatched: construct, list
jobs, build with parameters, block until complete, read console and status.

Usage: python3 jenkinsapi_client.py URL TOKEN [serve]. Exits non-zero (with a message) on any
mismatch. With `serve`, the server is a real `mlci serve` (its steps are the jobs; the failing
test job `fail` is not there).
"""
import sys

from jenkinsapi.jenkins import Jenkins


def main():
    url, token = sys.argv[1].rstrip("/"), sys.argv[2]
    real_serve = sys.argv[3:] == ["serve"]
    # Construction reads /api/python?tree=jobs[name,color,url] (ast-evaluated).
    server = Jenkins(url, username="ci", password=token, timeout=30)
    assert server.version == "2.462.3", server.version

    names = sorted(server.keys())
    assert "noop" in names, names
    if real_serve:
        want = ["health-check", "noop", "notify", "pipeline", "provision", "scm-sync", "train", "tune"]
        assert names == want, names
        assert "commit" in server.get_job("train").get_params_list()
    job = server.get_job("noop")
    assert job.has_params(), job
    assert job.get_params_list() == ["sleep_ms"], job.get_params_list()
    before = job.get_next_build_number()

    # invoke posts json={"parameter": [...]} and the fields (crumb fetched from
    # /crumbIssuer/api/python), then follows Location to the queue item.
    item = job.invoke(build_params={"sleep_ms": "300"})
    build = item.block_until_building(delay=0.1)
    build.block_until_complete(delay=0.2)
    build.poll()  # jenkinsapi keeps the data it read when building; refresh it
    assert build.get_number() == before, (build.get_number(), before)
    assert build.get_status() == "SUCCESS", build.get_status()
    assert build.is_good()
    assert build.get_params() == {"sleep_ms": "300"}, build.get_params()
    assert build.get_duration().total_seconds() >= 0.3, build.get_duration()
    console = build.get_console()
    assert "noop: sleeping 300 ms" in console, console
    assert console.rstrip().endswith("Finished: SUCCESS"), console

    if real_serve:
        print("all checks passed")
        return

    # A failing build of a job without parameters (invoke posts to /build): its
    # status, and the permalinks of both jobs.
    failing = server.get_job("fail")
    assert not failing.has_params()
    item = failing.invoke()
    failed = item.block_until_building(delay=0.1)
    failed.block_until_complete(delay=0.2)
    failed.poll()
    assert failed.get_status() == "FAILURE", failed.get_status()
    assert not failed.is_good()
    assert "about to fail" in failed.get_console()
    failing = server.get_job("fail")
    assert failing.get_last_failed_buildnumber() == failed.get_number()
    assert failing.get_last_completed_buildnumber() == failed.get_number()
    job = server.get_job("noop")
    assert job.get_last_buildnumber() == build.get_number()
    assert job.get_last_good_buildnumber() == build.get_number()
    assert job.get_last_stable_buildnumber() == build.get_number()
    assert build.get_number() in job.get_build_ids()
    assert not job.is_queued_or_running()
    print("all checks passed")


if __name__ == "__main__":
    main()
