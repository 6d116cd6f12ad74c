"""Drive every step of a real `mlci serve` as a Jenkins job with python-jenkins, unchanged.

Usage: python3 python_jenkins_steps.py URL TOKEN REPO_URL DATA
Each job is triggered with build_job, followed through its queue item to its build, waited
for, and its console read, as a Jenkins (or the Parameterized Remote Trigger plugin) would.
Exits non-zero with a message on any mismatch; prints one line per job.
"""
import re
import sys
import time

import jenkins
import requests

ALLOWED = {"SUCCESS", "UNSTABLE"}


def run(server, job, params, allowed=None):
    allowed = allowed or {"SUCCESS"}
    queue = server.build_job(job, params)
    deadline = time.time() + 600
    while True:
        item = server.get_queue_item(queue)
        if item.get("executable"):
            break
        assert time.time() < deadline, (job, item)
        time.sleep(0.1)
    number = item["executable"]["number"]
    while True:
        build = server.get_build_info(job, number)
        if not build["building"]:
            break
        assert time.time() < deadline, (job, build)
        time.sleep(0.2)
    console = server.get_build_console_output(job, number)
    result = build["result"]
    assert result in allowed, (job, result, console[-3000:])
    assert console.rstrip().endswith("Finished: " + result), (job, console[-500:])
    print(f"{job} #{number}: {result}")
    return console


def main():
    url, token, repo_url, data = sys.argv[1:5]
    server = jenkins.Jenkins(url, username="jenkins", password=token, timeout=30)
    names = {job["name"] for job in server.get_jobs()}
    expected = {"scm-sync", "provision", "train", "tune", "notify", "health-check", "pipeline", "noop"}
    assert expected <= names, names

    model = {"repository": "model"}
    console = run(server, "scm-sync", dict(model, url=repo_url, branch="main"))
    assert "checked out" in console, console
    run(server, "provision", dict(model, data=data))
    run(server, "train", dict(model, data=data, goal=0.5), ALLOWED)
    console = run(server, "tune", dict(model, data=data, experiment="experiment.yaml"), ALLOWED)
    tune_run = re.search(r"\(run (r-\d+), step tune\)", console).group(1)
    run(server, "notify", {"run": tune_run})
    run(server, "health-check", {})
    run(server, "noop", {"sleep_ms": 10})
    run(server, "pipeline", dict(model, url=repo_url, data=data), ALLOWED)
    # A bad parameter is refused when triggered, naming the field.
    try:
        server.build_job("train", dict(model, data="/nonexistent/mlci"))
    except requests.exceptions.HTTPError as e:
        assert e.response.status_code == 400, e
        assert e.response.json()["field"] == "data", e.response.text
    else:
        raise AssertionError("a missing dataset was accepted")
    print("python-jenkins: every job passed")


if __name__ == "__main__":
    main()
