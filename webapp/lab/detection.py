"""Detection on the dashboard: Neural Cleanse scans of BadNets (defenses.cleanse) and STRIP on GoodNets
(defenses.strip), as records the pages read: what a scan found, with pictures, and whether it matches the
targets the team's poisoned sets declare."""

from webapp.lab.models import BadNet, Dataset, TriggerScan

PICTURED = 3  # besides the flagged labels, the labels with the smallest masks get pictures


def scan_record(result, example) -> dict:
    """A finished scan as JSON for its row: the labels ranked by anomaly index, the flagged ones, and
    pictures (mask, trigger = mask x pattern, `example` stamped) of the flagged and smallest labels."""
    from defenses.cleanse import ranked_rows, smallest_labels, stamp
    from webapp.lab.inference import thumbnail

    pictured = list(dict.fromkeys(result.flagged + smallest_labels(result, PICTURED)))
    pictures = {}
    for label in pictured:
        trigger = result.triggers[label]
        mask = trigger.mask[..., None]
        pictures[str(label)] = {
            "mask": thumbnail((mask * 255.0).repeat(3, axis=2)),
            "trigger": thumbnail(mask * trigger.pattern),
            "stamped": thumbnail(stamp(example[None], trigger.mask, trigger.pattern)[0]),
        }
    norms = sorted(trigger.norm for trigger in result.triggers.values())
    return {
        "labels": len(result.triggers),
        "flagged": result.flagged,
        "prescreened": result.prescreened,
        "seconds": round(result.seconds, 1),
        "median_l1": norms[len(norms) // 2],
        "rows": ranked_rows(result)[:10],
        "pictures": pictures,
    }


def declared_targets(badnet: BadNet) -> dict[int, list[str]]:
    """The targets the BadNet's own poisoned sets declare (Dataset.badnets: declared at upload or on the set's
    page, or used in its experiments): target label -> trigger names. Another BadNet's sets of the team are
    not its attack, even when their labels fit."""
    targets: dict[int, list[str]] = {}
    poisoned = badnet.declared_sets.filter(team=badnet.team, role__in=[Dataset.POISONED_TEST, Dataset.POISONED_VALID])
    for dataset in poisoned.order_by("name"):
        if dataset.target is not None and not dataset.misfit(badnet):
            names = targets.setdefault(int(dataset.target), [])
            if (dataset.trigger or dataset.name) not in names:
                names.append(dataset.trigger or dataset.name)
    return targets


def scans_context(badnet: BadNet) -> dict:
    """The BadNet's scans (of its own team's sets), each finished one with its flagged labels set against
    the declared targets; whether one is still being computed (the page then polls)."""
    scans = list(TriggerScan.objects.filter(badnet=badnet, dataset__team=badnet.team).select_related("dataset"))
    declared = declared_targets(badnet)
    for scan in scans:
        flagged = scan.result.get("flagged", []) if scan.status == TriggerScan.Status.DONE else []
        scan.matches = [(label, declared.get(label, [])) for label in flagged]
        scan.missed = [(label, names) for label, names in declared.items() if label not in flagged]
        scan.pictured = [(int(label), pictures) for label, pictures in scan.result.get("pictures", {}).items()]
    waiting = {TriggerScan.Status.QUEUED, TriggerScan.Status.RUNNING}
    return {"badnet": badnet, "scans": scans, "scans_waiting": any(s.status in waiting for s in scans)}
