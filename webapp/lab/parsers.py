"""Request-body parsers for the API. Every POST endpoint reads its body as named fields (request.data.get), so a
JSON body that is not an object ([], "abc", 42, null) is refused here, once, with a 400 that says what to send."""

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

JSON_TYPES = {
    list: "a list",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "true or false",
    type(None): "null",
}


class ObjectJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        data = super().parse(stream, media_type, parser_context)
        if not isinstance(data, dict):
            raise ParseError(
                f"The JSON body is {JSON_TYPES.get(type(data), 'not an object')}; send one object of "
                'named fields, like {"name": "grid", "thresholds": [0.8, 1.0]}, as the API schema '
                "(/api/schema/) describes."
            )
        return data
