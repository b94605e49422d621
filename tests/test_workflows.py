"""The GitHub Actions workflows, which cannot run here: each validates against GitHub's
workflow schema (check-jsonschema's copy, offline), and does what the README says.

- `.github/workflows/ci.yml`, the maintainers': runs `.ci/run`, then publishes the book's
  `_build/html` on GitHub Pages, in a job that waits for the tests and holds the permissions
  Pages needs;
- `.github/workflows/grade.yml`, for learners who fork the course: runs `make grade` on
  their exercises and writes its tables into the job summary.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
CI, GRADE = WORKFLOWS / "ci.yml", WORKFLOWS / "grade.yml"


def validate(*paths: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "check_jsonschema", "--builtin-schema"]
    command += ["vendor.github-workflows", *map(str, paths)]
    return subprocess.run(command, capture_output=True, text=True)


def load(path: Path) -> dict:
    workflow = yaml.safe_load(path.read_text())
    workflow["on"] = workflow.pop(True, workflow.get("on"))  # YAML 1.1 reads `on:` as True
    return workflow


def steps(job: dict) -> list[dict]:
    return job.get("steps", [])


def uses(job: dict, action: str) -> list[dict]:
    return [s for s in steps(job) if s.get("uses", "").split("@")[0] == action]


def test_workflows_validate_against_githubs_schema():
    result = validate(CI, GRADE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_rejects_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(GRADE.read_text().replace("runs-on:", "runs_on:"))
    wrong = tmp_path / "wrong.yml"
    wrong.write_text(CI.read_text().replace("pages: write", "pages: publish"))
    result = validate(broken, wrong)
    assert result.returncode != 0
    assert "broken.yml" in result.stdout and "wrong.yml" in result.stdout, result.stdout


def test_ci_runs_ci_run_and_publishes_the_book_to_pages():
    jobs = load(CI)["jobs"]
    runs = {name: [s.get("run", "") for s in steps(job)] for name, job in jobs.items()}
    build = next(name for name, commands in runs.items() if ".ci/run" in commands)
    assert "make book" in runs[build]
    upload = uses(jobs[build], "actions/upload-pages-artifact")
    assert upload and upload[0]["with"]["path"] == "_build/html"
    # The book is built where the test job runs, before it is uploaded.
    order = [s.get("run") or s.get("uses", "").split("@")[0] for s in steps(jobs[build])]
    assert order.index(".ci/run") < order.index("make book")
    assert order.index("make book") < order.index("actions/upload-pages-artifact")

    deploy = next(name for name, job in jobs.items() if uses(job, "actions/deploy-pages"))
    job = jobs[deploy]
    assert build in ([job["needs"]] if isinstance(job["needs"], str) else job["needs"])
    assert job["permissions"] == {"pages": "write", "id-token": "write"}
    assert job["environment"]["name"] == "github-pages"
    assert "steps.deployment.outputs.page_url" in job["environment"]["url"]
    assert uses(job, "actions/deploy-pages")[0]["id"] == "deployment"
    assert job["concurrency"]["cancel-in-progress"] is False  # a deployment never cut short
    # Uploaded and deployed on the same condition: pushes to the default branch, never a PR.
    assert upload[0]["if"] == job["if"] and "pull_request" in job["if"]


def test_ci_leaves_learners_forks_to_the_grade_workflow():
    # A fork's exercise notebooks hold a learner's work, which `make test` would call stale.
    (condition,) = [job["if"] for job in load(CI)["jobs"].values() if "needs" not in job]
    assert condition.replace(" ", "") == "${{!github.event.repository.fork}}"


def test_ci_grants_no_more_than_reading_by_default():
    assert load(CI)["permissions"] == {"contents": "read"}
    assert load(GRADE)["permissions"] == {"contents": "read"}


def test_grade_workflow_runs_make_grade_into_the_job_summary():
    workflow = load(GRADE)
    assert "exercises/**" in workflow["on"]["push"]["paths"]
    assert "workflow_dispatch" in workflow["on"]
    (job,) = workflow["jobs"].values()
    commands = [s.get("run", "") for s in steps(job)]
    assert any(
        re.fullmatch(r'make grade STRICT=1 GRADE_ARGS="--markdown \$GITHUB_STEP_SUMMARY"', c)
        for c in commands
    ), commands
    # make passes GRADE_ARGS on to the grader, which takes --markdown.
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(
        r"^grade:.*\n\t.*-m course\.grading\.grade exercises .*\$\(GRADE_ARGS\)$", makefile, re.M
    )
    assert "fork" in job["if"]  # the course's own repository holds only stubs


@pytest.mark.parametrize("path", [CI, GRADE], ids=["ci", "grade"])
def test_workflows_use_a_python_the_course_supports(path):
    requires = re.search(
        r'requires-python = ">=(\d+)\.(\d+)"', (ROOT / "pyproject.toml").read_text()
    )
    for job in load(path)["jobs"].values():
        for step in uses(job, "actions/setup-python"):
            major, minor = map(int, str(step["with"]["python-version"]).split("."))
            assert (major, minor) >= (int(requires[1]), int(requires[2]))
        for step in steps(job):
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", step["uses"]), step["uses"]
