"""MkDocs hooks: the parts of pages generated from the code, never typed."""

from fruitflow_pipeline.settings_reference import settings_markdown

SETTINGS_REFERENCE = "<!-- settings reference: generated from plugins/fruitflow_pipeline/settings_reference.py -->"


def on_page_markdown(markdown: str, page, **kwargs) -> str:
    return markdown.replace(SETTINGS_REFERENCE, settings_markdown())
