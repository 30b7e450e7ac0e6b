"""MkDocs hooks: the parts of pages generated from the code, never typed."""

from fruitflow_pipeline.settings_reference import settings_table

SETTINGS_TABLE = "<!-- settings table: generated from plugins/fruitflow_pipeline/settings_reference.py -->"


def on_page_markdown(markdown: str, page, **kwargs) -> str:
    return markdown.replace(SETTINGS_TABLE, settings_table())
