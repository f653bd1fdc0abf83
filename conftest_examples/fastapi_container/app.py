"""A FastAPI inference container (your container's code): async handler, NVCF headers as params.

Registered with ``nvcf.add_function(app, ...)`` it runs on the emulator's own ASGI bridge, as
uvicorn would run it: its lifespan once per function, background tasks after the answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, Header, HTTPException
from pydantic import BaseModel

app = FastAPI()


class Prompt(BaseModel):
    prompt: str


@app.get("/v2/health/ready")
async def ready() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/v1/generate")
async def generate(
    body: Prompt,
    nvcf_reqid: Annotated[str, Header(alias="NVCF-REQID")],
    nvcf_asset_dir: Annotated[str, Header(alias="NVCF-ASSET-DIR")],
    nvcf_function_asset_ids: Annotated[str, Header(alias="NVCF-FUNCTION-ASSET-IDS")] = "",
) -> dict[str, object]:
    ids = [i for i in nvcf_function_asset_ids.split(",") if i]
    if not ids:
        raise HTTPException(status_code=422, detail="an input asset is required")
    text = (Path(nvcf_asset_dir) / ids[0]).read_text()
    return {"request": nvcf_reqid, "answer": f"{body.prompt}: {text.upper()}"}
