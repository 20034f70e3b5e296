"""Steps of a routed flow written in Python, and a flow built from them.

A routed workflow file names a step class as ``"examples.routed_steps:CheckPassword"``
(its ``config`` becomes keyword arguments); a dataflow runs ``login_flow`` once
per item with ``type: routed.flow`` and ``flow: "examples.routed_steps:login_flow"``.
"""

from __future__ import annotations

from typing import Any

from flowstream import Action, Flow, KeyExists, StepContext


class CheckPassword:
    """Mark the user authenticated when the stored password matches."""

    def __init__(self, secret: str = "s3cret") -> None:
        self.secret = secret

    async def execute(self, ctx: StepContext) -> Action:
        if await ctx.store.get("password", type=str, default="") == self.secret:
            await ctx.store.set("user_authenticated", True)
        return Action.conditional(
            KeyExists("user_authenticated"), "welcome", "login_failed"
        )


async def read_input(ctx: StepContext) -> Action:
    """Take ``user`` and ``password`` from the item a dataflow passed in."""
    item: dict[str, Any] = await ctx.store.get("input", type=dict, default={})
    await ctx.store.update({k: v for k, v in item.items() if k in {"user", "password"}})
    return Action.simple("check")


async def welcome(ctx: StepContext) -> Action:
    user = await ctx.store.get("user", type=str, default="anonymous")
    return Action.complete({"user": user, "authenticated": True})


async def login_failed(ctx: StepContext) -> Action:
    return Action.complete({"authenticated": False})


login_flow = (
    Flow.builder("login")
    .add_node("read_input", read_input)
    .add_node("check", CheckPassword())
    .add_node("welcome", welcome)
    .add_node("login_failed", login_failed)
    .add_route("read_input", "check")
    .add_route("check", "welcome")
    .add_route("check", "login_failed")
    .build()
)
