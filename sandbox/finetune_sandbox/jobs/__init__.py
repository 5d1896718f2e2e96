"""The sandbox's batch/v1 Job controller: observe a Job and its pods, decide (`plan.plan_job`, pure), act
(`controller.JobController`: creates and deletes pods, writes the Job's status), report (`events`: client-go's
event recorder, for SuccessfulCreate/FailedCreate/SuccessfulDelete) and retry refused creates (`backoff`: the
work queue's rate limiter)."""

from .controller import JobController

__all__ = ["JobController"]
