"""A study is a YAML file: a base config plus groups of runs, each a grid of factors.

    name: hints
    out: runs/studies/hints          # the study directory is OUT/SCALE
    defaults:                        # base of every train / distill config
      data: {name: digits}
      epochs: 2
    groups:                          # in dependency order
      teacher:
        kind: train                  # train | distill | a registered step (kdlens.studies.papers)
        config: {model: {name: resnet20}}
      search:
        kind: hint-search
        needs: [teacher]
        params: {k: 3}
      student:
        kind: distill
        needs: [teacher, search]
        config: {teacher: {run: "${teacher}"}}
        grid:                        # cartesian product; keys are dotted config paths
          method: [at+kd, fitnet+kd]
          hints: [conventional, auto]
          seed: [0, 1, 2]
    scales:                          # deep-merged over the document by --scale
      smoke: {defaults: {epochs: 1}, groups: {student: {grid: {seed: [0]}}}}

Grid values are scalars (set at the key's path) or *bundles*: a mapping of dotted paths
set together, named by its ``label`` or by its value at the factor's own key
(``data.budget: [{data.budget: 100, epochs: 200}, …]`` has levels 100, …).  ``each:
[data.budget, data.fold]`` expands a group over the levels its needed groups have.  On a
step, a dotted factor (a run's config path such as ``data.fold``) only selects which tasks it
needs; an undotted one sets the step parameter of that name.

Dependencies: a task of group G that ``needs`` group H depends on the tasks of H whose levels
agree with its own on the factors they share (a student of fold 2 needs the teacher of
fold 2; a step without those factors needs all of them).  ``"${teacher}"`` anywhere in a
config or params is replaced by the directory of the (single) matching ``teacher`` task.

Every task has a hash over its kind, its config and its dependencies' hashes; the task
index (``STUDY_DIR/tasks/runs.sqlite``) records done / failed / why.  Re-running a study
skips tasks done with the same hash, so a killed study resumes with the tasks that were in
flight (themselves resumed from their last checkpoint), and a finished one does nothing.

Every task's train / distill config is validated when the study is loaded (a misspelt key or
group is exit 2 before anything runs).  One runner holds a study at a time (``study.lock``);
Ctrl-C, SIGTERM and SIGHUP stop its workers, mark the tasks in flight ``interrupted`` and say
in one line what was kept.

Modules
-------
* :mod:`.spec` — the YAML schema (:class:`StudySpec`, :class:`GroupSpec`), ``RUN_KINDS`` /
  ``SCALES``, :func:`deep_merge`, :func:`set_path` and grid factors (:class:`Level`).
* :mod:`.study` — :class:`Task` and :class:`Study` (an expanded study and its saved plan).
* :mod:`.expand` — grid → tasks (:func:`expand`), ``"${group}"`` references, and
  :func:`load_study` / :func:`open_study`.
* :mod:`.state` — :class:`TaskState`, the task index and :func:`task_states`.
* :mod:`.lock` — :class:`StudyLock` (one runner per study, ``study.lock`` naming its pid and
  host) and :func:`runner_alive`.
* :mod:`.interrupt` — Ctrl-C, SIGTERM and SIGHUP stop a study alike (:class:`StudyInterrupted`).
* :mod:`.run` — :func:`run_study`, :class:`StudySummary`, :func:`status_rows`, :func:`iter_done`.
* :mod:`.progress` — :class:`StudyProgress`, the live table of a running study.
"""

from kdlens.studies.grid.expand import expand, load_study, open_study, substitute
from kdlens.studies.grid.progress import StudyProgress
from kdlens.studies.grid.run import StudySummary, iter_done, run_study, status_rows
from kdlens.studies.grid.spec import (
    RUN_KINDS,
    SCALES,
    GroupSpec,
    Level,
    StudySpec,
    deep_merge,
    factor_levels,
    set_path,
)
from kdlens.studies.grid.interrupt import StudyInterrupted
from kdlens.studies.grid.lock import StudyLock, runner_alive
from kdlens.studies.grid.state import TaskState, task_index, task_states
from kdlens.studies.grid.study import Study, Task

__all__ = [
    "RUN_KINDS",
    "SCALES",
    "GroupSpec",
    "Level",
    "Study",
    "StudyProgress",
    "StudyInterrupted",
    "StudyLock",
    "StudySpec",
    "StudySummary",
    "Task",
    "TaskState",
    "deep_merge",
    "expand",
    "factor_levels",
    "iter_done",
    "load_study",
    "open_study",
    "run_study",
    "runner_alive",
    "set_path",
    "status_rows",
    "substitute",
    "task_index",
    "task_states",
]
