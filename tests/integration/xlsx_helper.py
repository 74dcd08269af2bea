"""A minimal XLSX workbook written with the standard library's zipfile, for the tests that
upload workbooks (the lookup-table upload: api_fidelity_test, import_cli_test)."""
import io
import zipfile
from xml.sax.saxutils import escape, quoteattr


def xlsx(sheets):
    """A minimal XLSX workbook of {sheet name: rows of text cells}, written with zipfile (inline
    strings). The sheets' parts are numbered backwards, so a reader must follow
    workbook.xml.rels to find a sheet by name."""
    main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    names = list(sheets)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("[Content_Types].xml",
                   '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
                   '<Default Extension="xml" ContentType="application/xml"/></Types>')
        z.writestr("xl/workbook.xml", f'<workbook xmlns="{main}" xmlns:r="{rel}"><sheets>' + "".join(
            f'<sheet name={quoteattr(n)} sheetId="{i + 1}" r:id="rId{i + 1}"/>'
            for i, n in enumerate(names)) + "</sheets></workbook>")
        z.writestr("xl/_rels/workbook.xml.rels",
                   '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
                   + "".join(f'<Relationship Id="rId{i + 1}" Type="{rel}/worksheet" '
                             f'Target="worksheets/sheet{len(names) - i}.xml"/>'
                             for i in range(len(names))) + "</Relationships>")
        for i, n in enumerate(names):
            rows = "".join(
                f'<row r="{r + 1}">' + "".join(
                    f'<c r="{chr(65 + c)}{r + 1}" t="inlineStr"><is><t>{escape(v)}</t></is></c>'
                    for c, v in enumerate(row) if v != "") + "</row>"
                for r, row in enumerate(sheets[n]))
            z.writestr(f"xl/worksheets/sheet{len(names) - i}.xml",
                       f'<worksheet xmlns="{main}"><sheetData>{rows}</sheetData></worksheet>')
    return buf.getvalue()
