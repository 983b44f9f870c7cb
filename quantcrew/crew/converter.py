"""The crew's output converter: a task's view is the LLM's JSON when it is valid, else built from
the run's tool results.

CrewAI turns a task's final text into its ``output_pydantic`` model and, when the text is not
valid JSON for it, asks the LLM again and finally fails the whole run. A weak or chatty LLM
would then lose a run whose tools all answered. :func:`view_converter` makes a per-run
``Converter`` class that (1) takes the text as JSON when it validates (no extra LLM call; the
offline planner always answers this way), (2) otherwise lets CrewAI ask the LLM once more,
and (3) when that fails too, builds the view from the tool results
(:mod:`quantcrew.crew.views`), so the structured record of a run never depends on how well
an LLM formats JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from crewai.utilities.converter import Converter, ConverterError
from pydantic import BaseModel, ValidationError

__all__ = ["ViewConverter", "view_converter"]

Structurer = Callable[[type[BaseModel]], BaseModel | None]


class ViewConverter(Converter):
    """A ``Converter`` that falls back to the run's structurer; see the module docstring."""

    structurer: ClassVar[Structurer | None] = None

    def to_pydantic(self, current_attempt: int = 1) -> BaseModel:
        """The model from the text, from the LLM, or from the tool results, in that order."""
        try:
            return self.model.model_validate_json(self.text)
        except ValidationError:
            pass
        try:
            return super().to_pydantic(current_attempt)
        except ConverterError:
            return self._from_tool_results()

    async def ato_pydantic(self, current_attempt: int = 1) -> BaseModel:
        """Async twin of :meth:`to_pydantic`."""
        try:
            return self.model.model_validate_json(self.text)
        except ValidationError:
            pass
        try:
            return await super().ato_pydantic(current_attempt)
        except ConverterError:
            return self._from_tool_results()


    def _from_tool_results(self) -> BaseModel:
        """The structurer's view; re-raises the conversion error when there is none."""
        structurer = type(self).structurer
        built = structurer(self.model) if structurer is not None else None
        if built is None:
            raise ConverterError(f"the LLM's answer is not a valid {self.model.__name__} and the tool results "
                                 "cannot build one")
        return built


def view_converter(structurer: Structurer) -> type[ViewConverter]:
    """A ``ViewConverter`` subclass bound to one run's structurer (CrewAI takes a class, not an instance)."""
    namespace: dict[str, Any] = {"structurer": staticmethod(structurer), "__module__": __name__}
    return type("RunViewConverter", (ViewConverter,), namespace)
