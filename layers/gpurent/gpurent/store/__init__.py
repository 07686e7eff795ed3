"""The store: the only code that imports boto3 (DynamoDB, SES, SSM)."""
