"""`training.mode: scheduled`: a retrain CronJob instead of a trainer Deployment."""

from __future__ import annotations

from driftline.operator.builders import BuildContext, build_children

from .conftest import defaults, sample


def kinds(ctx: BuildContext) -> dict[tuple[str, str], dict[str, object]]:
    return {(m["kind"], m["metadata"]["name"]): m for m in build_children(ctx).namespaced}


def test_a_scheduled_model_gets_a_cron_job_and_no_trainer_deployment() -> None:
    made = kinds(
        BuildContext(
            sample(
                "minimal",
                training__mode="scheduled",
                training__schedule={"cron": "30 2 * * 1", "historySeconds": 86400},
            ),
            defaults(),
        )
    )
    job = made[("CronJob", "churn-retrain")]
    spec = job["spec"]
    assert isinstance(spec, dict)
    assert spec["schedule"] == "30 2 * * 1" and spec["concurrencyPolicy"] == "Forbid"
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["command"][-1] == "retrain"
    assert pod["serviceAccountName"] == "churn-retrain"
    assert ("ServiceAccount", "churn-retrain") in made
    assert ("NetworkPolicy", "churn-retrain") in made
    assert ("Deployment", "churn-trainer") not in made


def test_schedule_seconds_become_the_nearest_cron() -> None:
    made = kinds(
        BuildContext(
            sample("minimal", training__mode="scheduled", training__scheduleSeconds=6 * 3600),
            defaults(),
        )
    )
    assert made[("CronJob", "churn-retrain")]["spec"]["schedule"] == "0 */6 * * *"  # type: ignore[index]


def test_an_online_model_has_no_cron_job() -> None:
    made = kinds(BuildContext(sample("minimal"), defaults()))
    assert not [k for k in made if k[0] == "CronJob" or k[1] == "churn-retrain"]
    assert ("Deployment", "churn-trainer") in made
