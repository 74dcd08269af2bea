"""libcommcare from Python: submit a form, read the case, sync it to a phone.

    COMMCARE_LIBRARY=build/lib/libcommcare_c.so PYTHONPATH=bindings/python \
        python3 examples/python/quickstart.py
"""
import commcare

FORM = """<?xml version="1.0"?>
<data xmlns="http://example.org/registration">
  <meta xmlns="http://openrosa.org/jr/xforms"><instanceID>form-1</instanceID>
    <userID>{user}</userID></meta>
  <case xmlns="http://commcarehq.org/case/transaction/v2" case_id="case-1"
        date_modified="2024-05-01T10:00:00Z" user_id="{user}">
    <create><case_type>patient</case_type><case_name>Ana</case_name>
      <owner_id>{user}</owner_id></create>
    <update><village>Kisumu</village></update>
  </case>
</data>"""

with commcare.Engine() as engine:  # in memory; Engine("/srv/cc") keeps it on disk
    engine.create_domain("demo")
    nurse = engine.put_user("nurse", domains=["demo"], password="secret")
    result = engine.submit(FORM.format(user=nurse["user_id"]), "demo")
    print("submitted:", result.status, result.nature, result.form_id)
    case = engine.case("demo", "case-1")
    print("case:", case["case_name"], case["properties"])
    payload = engine.restore("demo", "nurse")
    assert b"case-1" in payload
    print("restore: %d bytes" % len(payload))
    try:
        engine.case("demo", "no-such-case")
    except commcare.NotFoundError as e:
        print("as expected:", e)
