"""Drive mlci serve's Jenkins-compatible API with python-jenkins, the real client.

Usage: python3 python_jenkins.py URL TOKEN. Exits non-zero (with a message) on any mismatch.
"""
import sys
import time

import jenkins


def main():
    url, token = sys.argv[1], sys.argv[2]
    server = jenkins.Jenkins(url, username="ci", password=token, timeout=30)

    version = server.get_version()
    assert version == "2.462.3", version

    me = server.get_whoami()
    assert me["id"] == "ci", me

    jobs = server.get_jobs()
    names = sorted(job["name"] for job in jobs)
    assert "noop" in names, names
    assert all(job["url"].startswith(url) for job in jobs), jobs

    info = server.get_job_info("noop")
    assert info["name"] == "noop", info
    next_number = info["nextBuildNumber"]
    definitions = info["property"][0]["parameterDefinitions"]
    assert [d["name"] for d in definitions] == ["sleep_ms"], definitions

    queue_number = server.build_job("noop", {"sleep_ms": 200})
    assert isinstance(queue_number, int), queue_number

    deadline = time.time() + 30
    while True:
        item = server.get_queue_item(queue_number)
        if item.get("executable"):
            break
        assert time.time() < deadline, item
        time.sleep(0.05)
    number = item["executable"]["number"]
    assert number == next_number, (number, next_number)
    assert item["_class"] == "hudson.model.Queue$LeftItem", item

    while True:
        build = server.get_build_info("noop", number)
        if not build["building"]:
            break
        assert build["result"] is None, build
        assert time.time() < deadline, build
        time.sleep(0.05)
    assert build["result"] == "SUCCESS", build
    assert build["number"] == number, build
    assert build["duration"] >= 200, build
    assert build["timestamp"] > 1_600_000_000_000, build

    console = server.get_build_console_output("noop", number)
    assert "noop: sleeping 200 ms" in console, console
    assert console.rstrip().endswith("Finished: SUCCESS"), console

    assert server.get_job_info("noop")["lastBuild"]["number"] == number

    # A failing build and a bad parameter.
    failing = server.build_job("fail")
    while not server.get_queue_item(failing).get("executable"):
        time.sleep(0.05)
    fail_number = server.get_queue_item(failing)["executable"]["number"]
    while server.get_build_info("fail", fail_number)["building"]:
        time.sleep(0.05)
    assert server.get_build_info("fail", fail_number)["result"] == "FAILURE"
    try:
        server.build_job("noop", {"sleep_ms": "soon"})
    except Exception as e:  # requests' HTTPError for the 400
        assert "400" in str(e), e
    else:
        raise AssertionError("a bad parameter was accepted")

    print("python-jenkins: all checks passed")


if __name__ == "__main__":
    main()
