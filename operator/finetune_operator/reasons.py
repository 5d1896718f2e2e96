"""Condition types, phases and reasons: the vocabulary of a FineTuneJob's status, in one place.

Reasons are CamelCase (metav1.Condition convention) and stable: dashboards, alerts and users' scripts
match on them.
"""

from __future__ import annotations

# Phases: a short summary for humans and printer columns; the conditions are the truth.
PENDING = "Pending"
QUEUED = "Queued"
STARTING = "Starting"
RUNNING = "Running"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
SUSPENDED = "Suspended"
PHASES = (PENDING, QUEUED, STARTING, RUNNING, SUCCEEDED, FAILED, SUSPENDED)
TERMINAL_PHASES = (SUCCEEDED, FAILED)

# Condition types.
COND_QUEUED = "Queued"
COND_ADMITTED = "Admitted"
COND_RUNNING = "Running"
COND_SUSPENDED = "Suspended"
COND_SUCCEEDED = "Succeeded"
COND_FAILED = "Failed"
COND_STALLED = "Stalled"
CONDITION_TYPES = (COND_QUEUED, COND_ADMITTED, COND_RUNNING, COND_SUSPENDED, COND_SUCCEEDED, COND_FAILED, COND_STALLED)

# Reasons while a job is on its way.
CREATED = "Created"
WAITING_FOR_ADMISSION = "WaitingForAdmission"
ADMITTED_BY_QUEUE = "AdmittedByQueue"
NO_QUEUE = "NoQueue"
POD_PENDING = "PodsPending"
# The Job controller cannot create the pods: admission refused them (quota, PriorityClass, Pod Security).
PODS_CANNOT_BE_CREATED = "PodsCannotBeCreated"
UNSCHEDULABLE = "Unschedulable"
IMAGE_PULL_FAILED = "ImagePullFailed"
# A Secret/ConfigMap the pod references is missing (the kubelet's CreateContainerConfigError).
CONFIG_ERROR = "ConfigError"
PODS_RUNNING = "PodsRunning"
FINISHING = "Finishing"
RETRYING = "Retrying"
# A multi-rank job lost a rank: its gang stops and starts again from the newest checkpoint (docs/reliability.md).
RESTARTING = "Restarting"
SUSPENDED_BY_USER = "SuspendedByUser"
RESUMED = "Resumed"
NOT_SUSPENDED = "NotSuspended"
COMPLETED = "Completed"
NO_PROGRESS = "NoProgress"
# Reasons of events that mark no phase change.
SPEC_CHANGE_IGNORED = "SpecChangeIgnored"
TRIAL_EARLY_STOPPED_EVENT = "TrialEarlyStopped"
TRIAL_FAILED_EVENT = "TrialFailed"
TRIAL_SUCCEEDED_EVENT = "TrialSucceeded"
PROGRESSING = "Progressing"
NOT_FINISHED = "NotFinished"

# Hyperparameter search (docs/search.md): the search job's reasons and its trials' states.
SEARCHING = "Searching"
PROMOTING = "Promoting"
EARLY_STOPPED = "EarlyStopped"
# A trial stopped because its loss was not finite or far above its start (search/divergence.py).
DIVERGED = "Diverged"
TRIAL_PENDING, TRIAL_RUNNING, TRIAL_SUCCEEDED, TRIAL_FAILED, TRIAL_EARLY_STOPPED = (
    "Pending",
    "Running",
    "Succeeded",
    "Failed",
    "EarlyStopped",
)
TRIAL_STATES = (TRIAL_PENDING, TRIAL_RUNNING, TRIAL_SUCCEEDED, TRIAL_FAILED, TRIAL_EARLY_STOPPED)
TRIAL_FINISHED_STATES = (TRIAL_SUCCEEDED, TRIAL_FAILED, TRIAL_EARLY_STOPPED)

# Failure reasons (the Failed condition's reason; also the label of the failures metric).
INVALID_SPEC = "InvalidSpec"
# The API server (an admission plugin) forbade creating a child: a namespace being terminated, a quota on
# object counts, a policy.
FORBIDDEN = "Forbidden"
INVALID_DATA = "InvalidData"
OUT_OF_MEMORY = "OutOfMemory"
STARTUP_DEADLINE_EXCEEDED = "StartupDeadlineExceeded"
DEADLINE_EXCEEDED = "DeadlineExceeded"
COMMUNICATION_TIMEOUT = "CommunicationTimeout"
PREEMPTED = "Preempted"
NODE_LOST = "NodeLost"
TRAINER_CRASHED = "TrainerCrashed"
# Object storage (s3://) and the Hugging Face Hub, as the trainer reports them (docs/storage.md).
STORAGE_ACCESS_DENIED = "StorageAccessDenied"
STORAGE_NOT_FOUND = "StorageNotFound"
STORAGE_UNAVAILABLE = "StorageUnavailable"
STORAGE_REQUEST_REJECTED = "StorageRequestRejected"
HUB_UNREACHABLE = "HubUnreachable"
# The trainer got SIGTERM without a disruption (its pod deleted, its node shut down) and saved a checkpoint.
STOPPED = "Stopped"
# The reasons a rank's trainer gives when another rank caused its end (docs/pod-contract.md): never the
# rank to blame for a multi-rank job's restart.
STOPPED_BY_PEER = "StoppedByPeer"
PEER_LOST = "PeerLost"
FOLLOWER_REASONS = (STOPPED_BY_PEER, PEER_LOST)
JOB_DELETED = "JobDeleted"
# A search: maxFailedTrials trials failed / every trial ended without an objective value / the promote Job failed.
TOO_MANY_TRIALS_FAILED = "TooManyTrialsFailed"
NO_SUCCESSFUL_TRIAL = "NoSuccessfulTrial"
PROMOTION_FAILED = "PromotionFailed"
# A trial whose trainer finished without ever reporting the search's objective metric.
OBJECTIVE_MISSING = "ObjectiveMissing"
FAILURE_REASONS = (
    INVALID_SPEC,
    FORBIDDEN,
    INVALID_DATA,
    OUT_OF_MEMORY,
    IMAGE_PULL_FAILED,
    CONFIG_ERROR,
    UNSCHEDULABLE,
    STARTUP_DEADLINE_EXCEEDED,
    DEADLINE_EXCEEDED,
    COMMUNICATION_TIMEOUT,
    PREEMPTED,
    NODE_LOST,
    TRAINER_CRASHED,
    STORAGE_ACCESS_DENIED,
    STORAGE_NOT_FOUND,
    STORAGE_UNAVAILABLE,
    STORAGE_REQUEST_REJECTED,
    HUB_UNREACHABLE,
    STOPPED,
    STOPPED_BY_PEER,
    PEER_LOST,
    JOB_DELETED,
    TOO_MANY_TRIALS_FAILED,
    NO_SUCCESSFUL_TRIAL,
    PROMOTION_FAILED,
)

# Failures of the spec itself, found before any pod ran: a changed spec (a new generation) tries again.
SPEC_REFUSALS = (INVALID_SPEC, FORBIDDEN)

# Trainer exit codes (docs/pod-contract.md) and the failure reason each one means.
EXIT_INVALID_DATA = 3
EXIT_OUT_OF_MEMORY = 4
EXIT_COMMUNICATION_TIMEOUT = 5
EXIT_STORAGE_ACCESS_DENIED = 6
EXIT_STORAGE_NOT_FOUND = 7
EXIT_STORAGE_UNAVAILABLE = 8
EXIT_STORAGE_REQUEST_REJECTED = 9
EXIT_HUB_UNREACHABLE = 10
EXIT_CODE_REASONS = {
    EXIT_INVALID_DATA: INVALID_DATA,
    EXIT_OUT_OF_MEMORY: OUT_OF_MEMORY,
    EXIT_COMMUNICATION_TIMEOUT: COMMUNICATION_TIMEOUT,
    EXIT_STORAGE_ACCESS_DENIED: STORAGE_ACCESS_DENIED,
    EXIT_STORAGE_NOT_FOUND: STORAGE_NOT_FOUND,
    EXIT_STORAGE_UNAVAILABLE: STORAGE_UNAVAILABLE,
    EXIT_STORAGE_REQUEST_REJECTED: STORAGE_REQUEST_REJECTED,
    EXIT_HUB_UNREACHABLE: HUB_UNREACHABLE,
}
# Trainer failures no retry can change: the Job's podFailurePolicy fails at once on their exit codes, and a
# multi-rank job is not restarted for them (gang.py). StorageUnavailable is not one: the next attempt may work.
FINAL_TRAINER_REASONS = (
    INVALID_DATA,
    STORAGE_ACCESS_DENIED,
    STORAGE_NOT_FOUND,
    STORAGE_REQUEST_REJECTED,
    HUB_UNREACHABLE,
)
FINAL_EXIT_CODES = tuple(sorted(code for code, reason in EXIT_CODE_REASONS.items() if reason in FINAL_TRAINER_REASONS))

# Hints appended to failure messages: what a user can do about it.
FAILURE_HINTS = {
    OUT_OF_MEMORY: "reduce hyperparameters.batchSize, raise gradientAccumulationSteps, "
    "lower maxSeqLength or use method.type: lora",
    INVALID_DATA: "fix the dataset or model named above and recreate the job; retrying cannot help",
    STORAGE_ACCESS_DENIED: "check the keys in the Secret named by spec.secrets.s3Credentials (AWS_ACCESS_KEY_ID, "
    "AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), the bucket's policy (reading needs s3:ListBucket and s3:GetObject, "
    "writing s3:PutObject) and AWS_ENDPOINT_URL, then recreate the job; retrying cannot help",
    STORAGE_NOT_FOUND: "fix the URI named above (bucket, key, Hub repo or revision) or create what it names, then "
    "recreate the job; retrying cannot help",
    STORAGE_UNAVAILABLE: "the object store throttled the trainer, failed or could not be reached even after the "
    "trainer's retries; the job is retried up to runPolicy.backoffLimit. If it persists, check AWS_ENDPOINT_URL "
    "and the network path from the cluster to the store",
    STORAGE_REQUEST_REJECTED: "the object store refused the request for the reason named above (wrong region: set "
    "AWS_DEFAULT_REGION; TLS: set AWS_CA_BUNDLE); fix it and recreate the job; retrying cannot help",
    HUB_UNREACHABLE: "the cluster cannot reach the Hugging Face Hub: copy the model to a PVC or a bucket and set "
    "model.source to pvc://CLAIM/PATH or s3://BUCKET/PREFIX, or set HF_ENDPOINT in spec.env to a Hub mirror",
    IMAGE_PULL_FAILED: "check spec.image and the cluster's pull secrets",
    CONFIG_ERROR: "create the Secret or ConfigMap named above in the job's own namespace "
    "(spec.secrets and spec.env valueFrom never reach other namespaces), or fix the reference",
    PREEMPTED: "the pod was preempted or evicted (node drain, a higher-priority workload or Kueue); "
    "recreate the job to resume from its latest checkpoint",
    NODE_LOST: "the node running the pod disappeared; recreate the job to resume from its latest checkpoint",
    STOPPED: "the trainer received SIGTERM (its pod was deleted without an eviction) and saved a checkpoint; "
    "the next attempt resumes from it",
    UNSCHEDULABLE: "no node can fit the pods: lower resources, check nodeSelector/tolerations or the queue's quota",
    DEADLINE_EXCEEDED: "raise runPolicy.activeDeadlineSeconds or train fewer steps",
    TOO_MANY_TRIALS_FAILED: "read the failed trials' messages in status.trials (ftjob describe); raise "
    "hyperparameterSearch.maxFailedTrials or narrow the parameter ranges",
    NO_SUCCESSFUL_TRIAL: "no trial reported the objective metric; check hyperparameterSearch.objective.metric "
    "against the trainer's eval metrics (status.trials[].message)",
    OBJECTIVE_MISSING: "check hyperparameterSearch.objective.metric against the eval metrics the trainer reports",
}
