import json
from importlib import resources

from tests.api.helpers import Client, turn


async def test_the_chat_assistant_example_answers_with_the_echo_provider(client: Client) -> None:
    spec = json.loads(resources.files("app.examples").joinpath("chat_assistant.json").read_text())
    created = await client.post(
        "/v1/workflows", json={"name": spec["name"], "definition": spec["definition"]}
    )
    workflow_id = created.json()["workflow_id"]
    run_id = (await turn(client, workflow_id))["run_id"]
    answer = await turn(client, workflow_id, run_id, "tell me about tandems")
    completed = next(e for e in answer["events"] if e["type"] == "llm_completed")
    assert completed["data"]["text"] == "tell me about tandems"
    assert completed["data"]["usage"]["completion_tokens"] == 4
    assert [e["data"]["text"] for e in answer["events"] if e["type"] == "message"] == [
        "tell me about tandems"
    ]
    assert answer["waiting_for"]["prompt"] == "Anything else?"
    done = await turn(client, workflow_id, run_id, "Bye")
    assert done["status"] == "completed" and done["output"] == {
        "last_reply": "tell me about tandems"
    }
