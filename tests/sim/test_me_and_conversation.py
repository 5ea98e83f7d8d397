"""Resource details of ``me`` (me_ref.md, with the traces of CreateAnApplication.md step 10 and
GetMyPhoto.md step 4) and ``conversation`` (conversation_ref.md, with the traces of SendAnIM.md):
fields, links, and no etag, as neither reference page nor trace shows one for them."""

from __future__ import annotations

from typing import Any

from tests.sim.conftest import Client, is_event

# me_ref.md, "Properties" and "Links".
ME_PROPERTIES = {
    "company",
    "department",
    "emailAddresses",
    "endpointUri",
    "homePhoneNumber",
    "mobilePhoneNumber",
    "name",
    "officeLocation",
    "otherPhoneNumber",
    "title",
    "uri",
    "workPhoneNumber",
}
ME_LINKS = {
    "self",
    "callForwardingSettings",
    "location",
    "makeMeAvailable",
    "note",
    "phones",
    "photo",
    "presence",
    "reportMyActivity",
}

# conversation_ref.md, "Properties" and "Links".
CONVERSATION_PROPERTIES = {
    "activeModalities",
    "audienceMessaging",
    "audienceMute",
    "created",
    "expirationTime",
    "importance",
    "participantCount",
    "readLocally",
    "recording",
    "state",
    "subject",
    "threadId",
}
CONVERSATION_LINKS = {
    "self",
    "addParticipant",
    "applicationSharing",
    "attendees",
    "audioVideo",
    "dataCollaboration",
    "disableAudienceMessaging",
    "disableAudienceMuteLock",
    "enableAudienceMessaging",
    "enableAudienceMuteLock",
    "leaders",
    "lobby",
    "localParticipant",
    "messaging",
    "onlineMeeting",
    "participants",
    "phoneAudio",
    "userAcknowledged",
}


def properties(resource: dict[str, Any]) -> set[str]:
    return set(resource) - {"_links", "_embedded", "rel"}


def test_me_before_and_after_make_me_available(sim, bot: Client) -> None:
    bot.start(available=False)
    app_href = bot.app["_links"]["self"]["href"]
    reply = bot.get(bot.link("me", "self"))
    assert reply.status_code == 200 and "Etag" not in reply.headers  # me_ref.md's GET sample
    me = reply.json()
    assert me == bot.app["_embedded"]["me"]
    assert me["rel"] == "me" and "etag" not in me
    assert (me["name"], me["uri"]) == ("Bot Account", "sip:bot@contoso.com")
    assert me["emailAddresses"] == ["bot@contoso.com"]
    assert properties(me) <= ME_PROPERTIES
    # CreateAnApplication.md step 10: before makeMeAvailable, these five links.
    links = me["_links"]
    assert set(links) == {"self", "makeMeAvailable", "callForwardingSettings", "phones", "photo"}
    assert links["self"]["href"] == app_href + "/me"
    assert links["photo"]["href"] == app_href + "/photos/bot@contoso.com"

    available = bot.post(links["makeMeAvailable"]["href"], {"SupportedModalities": ["Messaging"]})
    assert available.status_code == 204
    # GetMyPhoto.md step 4: after it, note, presence, location and reportMyActivity instead of
    # makeMeAvailable.
    after = bot.get(links["self"]["href"]).json()
    assert set(after["_links"]) == {
        "self",
        "note",
        "presence",
        "location",
        "reportMyActivity",
        "callForwardingSettings",
        "phones",
        "photo",
    }
    assert set(after["_links"]) <= ME_LINKS and properties(after) <= ME_PROPERTIES
    assert all(not link["href"].startswith("http") for link in after["_links"].values())


def test_conversation_connecting_then_connected(sim, bot: Client) -> None:
    bot.start()
    bot.drain()
    reply = bot.post(
        bot.link("communication", "startMessaging"),
        {"to": "sip:alice@contoso.com", "subject": "Task Sample", "importance": "Normal"},
    )
    assert reply.status_code == 201

    # SendAnIM.md, "conversation added": Connecting, no active modality, no localParticipant.
    _, added = bot.wait_for(is_event("conversation", "added"))
    connecting = added["_embedded"]["conversation"]
    assert connecting["state"] == "Connecting" and connecting["activeModalities"] == []
    assert "localParticipant" not in connecting["_links"]

    bot.wait_for(is_event("messagingInvitation", "completed"))
    href = added["link"]["href"]
    got = bot.get(href)
    assert got.status_code == 200 and "Etag" not in got.headers  # conversation_ref.md's sample
    conversation = got.json()
    assert conversation["rel"] == "conversation" and "etag" not in conversation
    assert properties(conversation) <= CONVERSATION_PROPERTIES
    assert set(conversation["_links"]) <= CONVERSATION_LINKS
    # SendAnIM.md, "conversation updated" once connected.
    assert conversation["state"] == "Connected"
    assert conversation["activeModalities"] == ["Messaging"]
    assert (conversation["subject"], conversation["importance"]) == ("Task Sample", "Normal")
    assert conversation["recording"] is False
    assert conversation["threadId"] == connecting["threadId"]
    assert conversation["participantCount"] == 2
    links = conversation["_links"]
    assert {"self", "messaging", "phoneAudio", "localParticipant", "addParticipant"} <= set(links)
    assert links["self"]["href"] == href
    assert links["messaging"]["href"] == href + "/messaging"
    assert links["localParticipant"] == {
        "href": href + "/participants/bot@contoso.com",
        "title": "Bot Account",
    }
    conversation_id = href.rsplit("/", 1)[1]
    assert links["addParticipant"]["href"].endswith(
        f"/communication/participantInvitations?conversation={conversation_id}"
    )
