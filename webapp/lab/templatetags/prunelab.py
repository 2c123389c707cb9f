"""Template filters of Prunelab's pages."""

from django import template

register = template.Library()


@register.filter
def duration(seconds) -> str:
    """A time a person reads at a glance: '40 s', '12 min', '2 h 05 min'."""
    if seconds is None:
        return ""
    seconds = max(0, round(float(seconds)))
    if seconds < 90:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"


@register.filter
def get_item(mapping, key):
    """mapping[key] in a template, for keys with spaces ("with prune")."""
    return (mapping or {}).get(key)
